import Protocol

/// An error of the store, with the SQLSTATE when PostgreSQL gave one.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }

        /// PostgreSQL cannot be reached, or the connection broke during the call.
        public static let unavailable = Code(name: "unavailable")
        /// A unique constraint refused the row (23505).
        public static let uniqueViolation = Code(name: "uniqueViolation")
        /// A foreign key or check constraint refused the row (23503, 23514, 23502).
        public static let constraintViolation = Code(name: "constraintViolation")
        /// A value PostgreSQL cannot take (bad text for its type, too long, out of range: class 22).
        public static let invalidValue = Code(name: "invalidValue")
        /// The transaction lost a race (40001 serialization failure, 40P01 deadlock); it is retried.
        public static let conflict = Code(name: "conflict")
        /// A statement ran past the statement timeout (57014).
        public static let timeout = Code(name: "timeout")
        /// A row did not decode into the type asked for.
        public static let decoding = Code(name: "decoding")
        /// Sigma's own SQLSTATEs, raised by functions in the schema: SG404 not found, SG429 exhausted,
        /// SG412 a precondition failed, SG400 a bad argument. The message is meant for the caller.
        public static let notFound = Code(name: "notFound")
        public static let exhausted = Code(name: "exhausted")
        public static let precondition = Code(name: "precondition")
        /// Any other error of a statement (a bug in our SQL, most likely).
        public static let query = Code(name: "query")
    }

    public let code: Code
    public let message: String
    public let sqlState: String?

    public init(_ code: Code, _ message: String, sqlState: String? = nil) {
        self.code = code
        self.message = message
        self.sqlState = sqlState
    }

    public var description: String {
        sqlState.map { "\(code) [\($0)]: \(message)" } ?? "\(code): \(message)"
    }

    /// Classifies a SQLSTATE (https://www.postgresql.org/docs/current/errcodes-appendix.html).
    static func fromSQLState(_ state: String, message: String) -> StoreError {
        let code: Code
        switch state {
        case "23505": code = .uniqueViolation
        case "23503", "23514", "23502", "23P01": code = .constraintViolation
        case "40001", "40P01": code = .conflict
        case "57014": code = .timeout
        case "SG404": code = .notFound
        case "SG429": code = .exhausted
        case "SG412": code = .precondition
        case "SG400": code = .invalidValue
        case _ where state.hasPrefix("22"): code = .invalidValue
        case _ where state.hasPrefix("08") || state == "57P01" || state == "57P02" || state == "57P03":
            code = .unavailable
        default: code = .query
        }
        return StoreError(code, message, sqlState: state)
    }
}

extension StoreError: RPCStatusConvertible {
    public var rpcError: RPCError {
        switch code {
        case .unavailable: .unavailable("database unavailable: \(message)")
        case .uniqueViolation: .alreadyExists(message)
        case .constraintViolation: .failedPrecondition(message)
        case .invalidValue: .invalidArgument(message)
        case .conflict: .unavailable("transaction conflict, try again: \(message)")
        case .timeout: .deadlineExceeded("database statement timed out")
        case .notFound: .notFound(message)
        case .exhausted: .resourceExhausted(message)
        case .precondition: .failedPrecondition(message)
        default: .internal("database error (\(code))")
        }
    }
}
