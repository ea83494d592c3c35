import Core
import Testing

@Suite struct AgentPhaseTests {
    /// Every move of the agent's phases is reported as a move the instance lifecycle lets an agent's report
    /// make (or as no change), so the scheduler never refuses what an agent says of its own instances.
    @Test func everyAgentMoveIsAnInstanceMoveAnAgentMayReport() {
        for move in AgentPhase.transitions {
            let targets = move.to.reported.map { [$0] } ?? Array(InstanceState.endings)
            for target in targets {
                guard let from = move.from.reported, from != target else { continue }
                #expect(from.canBeReported(as: target), "\(move.from) → \(move.to) reports \(from) → \(target)")
            }
        }
    }

    @Test func thePhasesAreWhole() {
        let moves = AgentPhase.transitions.map { (from: $0.from, to: $0.to) }
        #expect(reachable(from: AgentPhase.starting, moves) == Set(AgentPhase.allCases))
        #expect(!AgentPhase.transitions.contains { $0.from == .ended })
        #expect(!AgentPhase.ended.canMove(to: .starting) && AgentPhase.backOff.canMove(to: .backOff))
        #expect(!AgentPhase.selfFenced.canMove(to: .running))
    }
}
