import Core
import Foundation
import Store
import Testing
import TestSupport

/// The lifecycles in the database agree with Shared/Core's: the same states, the same moves, and any other
/// move refused by PostgreSQL whichever statement tries it.
@Suite struct StateConstraintTests {
    func withStore(_ body: (Store) async throws -> Void) async throws {
        try await withTestDatabase { db in
            let store = testStore(db.url)
            defer { store.shutdown() }
            try await store.migrate()
            try await body(store)
        }
    }

    @Test func theDatabaseHoldsCoreTransitionTables() async throws {
        try await withStore { store in
            var instanceMoves = Set<String>(), nodeMoves = Set<String>()
            for row in try await store.query("SELECT machine, from_state, to_state, event FROM lifecycle_moves") {
                let move = "\(try row.decode(String.self, "from_state")) --\(try row.decode(String.self, "event"))--> \(try row.decode(String.self, "to_state"))"
                if try row.decode(String.self, "machine") == "instance" { instanceMoves.insert(move) } else { nodeMoves.insert(move) }
            }
            #expect(instanceMoves == Set(InstanceState.transitions.map(\.description)))
            #expect(nodeMoves == Set(NodeHealth.transitions.map { "\($0.from.rawValue) --\($0.event.rawValue)--> \($0.to.rawValue)" }))

            // The CHECK constraints name exactly Core's states.
            func checked(_ constraint: String) async throws -> Set<String> {
                let definition = try await store.query(
                    "SELECT pg_get_constraintdef(oid) AS d FROM pg_constraint WHERE conname = $1", constraint)[0].decode(String.self, "d")
                let quoted = try NSRegularExpression(pattern: "'([A-Za-z]+)'")
                return Set(quoted.matches(in: definition, range: NSRange(definition.startIndex..., in: definition)).map {
                    String(definition[Range($0.range(at: 1), in: definition)!])
                })
            }
            #expect(try await checked("instances_state_known") == Set(InstanceState.allCases.map(\.rawValue)))
            #expect(try await checked("nodes_state_known") == Set(NodeHealth.allCases.map(\.rawValue)))
        }
    }

    /// Every pair of states: the database takes exactly the moves the table has, and refuses the rest with a
    /// constraint violation that names the move (the row keeps its state).
    @Test func everyMoveOutsideTheTableIsRefused() async throws {
        try await withStore { store in
            try await store.execute("INSERT INTO apps (name) VALUES ('moves')")
            let states = InstanceState.allCases
            for from in states {
                for to in states where to != from {
                    // Inserts are not moves: the row starts in `from` whichever state that is.
                    try await store.execute("DELETE FROM instances WHERE app = 'moves'")
                    try await store.execute("INSERT INTO instances (app, ordinal, state) VALUES ('moves', 0, $1)", from.rawValue)
                    do {
                        try await store.execute("UPDATE instances SET state = $1 WHERE app = 'moves'", to.rawValue)
                        #expect(from.canMove(to: to), "\(from) → \(to) was taken")
                    } catch let error as StoreError {
                        #expect(!from.canMove(to: to), "\(from) → \(to) was refused: \(error)")
                        #expect(error.code == .constraintViolation)
                        #expect(error.message.contains("\(from.rawValue) → \(to.rawValue) is not a move of its lifecycle"))
                        let kept = try await store.query("SELECT state FROM instances WHERE app = 'moves'")[0].decode(String.self, "state")
                        #expect(kept == from.rawValue)
                    }
                }
            }
            await #expect(throws: StoreError.self) {
                try await store.execute("INSERT INTO instances (app, ordinal, state) VALUES ('moves', 99, 'Runing')")
            }
            try await store.execute(
                "INSERT INTO nodes (name, host_ip, cpu_millis, memory_bytes, disk_bytes) VALUES ('n1', '198.18.0.1', 0, 0, 0)")
            await #expect(throws: StoreError.self) { try await store.execute("UPDATE nodes SET state = 'Sick'") }
            // Only silence makes a node Broken, and only fencing brings it back.
            try await store.execute("UPDATE nodes SET state = 'Broken'")
            await #expect(throws: StoreError.self) { try await store.execute("UPDATE nodes SET state = 'Suspect'") }
            try await store.execute("UPDATE nodes SET state = 'Ready'")
        }
    }
}
