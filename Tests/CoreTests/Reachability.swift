/// Every state reachable from `start` through `moves` (pairs from → to), `start` included: for the lifecycle
/// tables' shape tests.
func reachable<State: Hashable>(from start: State, _ moves: [(from: State, to: State)]) -> Set<State> {
    var seen: Set<State> = [start], queue = [start]
    while let state = queue.popLast() {
        for move in moves where move.from == state && seen.insert(move.to).inserted { queue.append(move.to) }
    }
    return seen
}
