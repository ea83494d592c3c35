import Core
import Testing

@Suite struct InstanceStateTests {
    @Test(arguments: [
        (InstanceState.pending, InstanceState.scheduled, true),
        (.scheduled, .starting, true),
        (.starting, .running, true),
        (.running, .needMigration, true),
        (.needMigration, .scheduled, true),
        (.running, .oomKilled, true),
        (.starting, .failed, true),
        (.scheduled, .failed, true),
        (.scheduled, .succeeded, true),
        (.running, .terminating, true),
        (.terminating, .terminated, true),
        (.pending, .running, false),
        (.succeeded, .running, false),
        (.terminated, .terminating, false),
        (.needMigration, .running, false),
    ])
    func transitions(from: InstanceState, to: InstanceState, allowed: Bool) {
        #expect(from.canMove(to: to) == allowed)
    }

    @Test func finalStates() {
        #expect(InstanceState.allCases.filter(\.isFinal) == [.succeeded, .failed, .oomKilled, .killed, .terminated])
    }
}
