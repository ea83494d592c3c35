import Core
import Testing

@Suite struct InstanceStateTests {
    @Test(arguments: [
        (InstanceState.pending, InstanceState.scheduled, true),
        (.scheduled, .starting, true),
        (.starting, .running, true),
        (.scheduled, .running, true),
        (.running, .needMigration, true),
        (.scheduled, .needMigration, true),
        (.backOff, .needMigration, true),
        (.needMigration, .scheduled, true),
        (.running, .oomKilled, true),
        (.running, .backOff, true),
        (.backOff, .starting, true),
        (.backOff, .running, true),
        (.starting, .failed, true),
        (.scheduled, .failed, true),
        (.scheduled, .succeeded, true),
        (.running, .terminating, true),
        (.backOff, .terminating, true),
        (.terminating, .terminated, true),
        (.needMigration, .terminated, true),
        (.pending, .running, false),
        (.pending, .backOff, false),
        (.succeeded, .running, false),
        (.failed, .backOff, false),
        (.terminated, .terminating, false),
        (.needMigration, .running, false),
        (.terminating, .running, false),
        (.running, .terminated, false),
    ])
    func transitions(from: InstanceState, to: InstanceState, allowed: Bool) {
        #expect(from.canMove(to: to) == allowed)
    }

    @Test func finalStates() {
        #expect(InstanceState.allCases.filter(\.isFinal) == [.succeeded, .failed, .oomKilled, .killed, .terminated])
    }

    /// The table's shape: one event per move, every state reachable from Pending, Terminated reachable from
    /// every state (every Terminating ends), and nothing leaves Terminated.
    @Test func theTableIsWhole() {
        let pairs = InstanceState.transitions.map { "\($0.from)>\($0.to)" }
        #expect(Set(pairs).count == pairs.count)
        let moves = InstanceState.transitions.map { (from: $0.from, to: $0.to) }
        #expect(reachable(from: InstanceState.pending, moves) == Set(InstanceState.allCases))
        for state in InstanceState.allCases { #expect(reachable(from: state, moves).contains(.terminated), "\(state) never ends") }
        #expect(!InstanceState.transitions.contains { $0.from == .terminated })
        for event in InstanceState.Event.allCases { #expect(InstanceState.transitions.contains { $0.event == event }, "\(event) moves nothing") }
    }

    /// An agent's report makes only the agent's moves: a late Terminated does not end an instance the
    /// scheduler is moving (it would be deleted, and its new copy never placed).
    @Test func reportsMakeOnlyTheAgentsMoves() {
        #expect(!InstanceState.needMigration.canBeReported(as: .terminated))
        #expect(!InstanceState.pending.canBeReported(as: .terminated))
        #expect(!InstanceState.running.canBeReported(as: .needMigration))
        #expect(InstanceState.terminating.canBeReported(as: .terminated))
        #expect(InstanceState.running.canBeReported(as: .backOff))
        #expect(InstanceState.scheduled.canBeReported(as: .running))
        #expect(InstanceState.backOff.canBeReported(as: .failed))
    }

    @Test func theSetsFollowTheLifecycle() {
        #expect(InstanceState.live == [.scheduled, .starting, .running, .backOff])
        #expect(InstanceState.holding.isSuperset(of: InstanceState.live))
        #expect(InstanceState.holding.isDisjoint(with: InstanceState.endings.union([.pending, .terminated])))
        #expect(InstanceState.tokenValid.contains(.backOff))
        #expect(InstanceState.names([.running, .pending]) == ["Pending", "Running"])
        for state in InstanceState.reportable { #expect(InstanceState.transitions.contains { $0.to == state && InstanceState.reportedEvents.contains($0.event) }) }
    }

    /// The agent's back-off reason reads back as the ending it restarts after, whatever that ending says
    /// (parentheses and "s restarting after" inside it too); a reason of another form stays as it is.
    @Test func aBackOffReasonReadsBackAsItsEnding() {
        for ending in ["exit 1", "start failed: image oci:/x:1: not found", "signal SIGKILL (OOM)", "an ending", "exit 2 (see 3s restarting after x)"] {
            for (wait, restarts) in [(0, 1), (4, 3), (300, 12)] {
                let reason = BackOffReason.text(waitSeconds: wait, after: ending, restarts: restarts)
                #expect(BackOffReason.ending(of: reason) == ending, "\(reason)")
            }
        }
        #expect(BackOffReason.ending(of: "exit 1") == "exit 1")
        #expect(BackOffReason.ending(of: "restarted 2 time(s); last exit 1") == "restarted 2 time(s); last exit 1")
    }
}
