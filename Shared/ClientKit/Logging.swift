import Foundation
import Logging

/// How log lines look: `text` (logfmt: `key=value`, greppable) or `json` (one object a line).
public enum LogFormat: String, Sendable, CaseIterable {
    case text, json
}

/// A swift-log handler that writes one structured line per event to standard error.
public struct StructuredLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    let label: String
    let format: LogFormat

    public init(label: String, level: Logger.Level, format: LogFormat) {
        self.label = label
        self.logLevel = level
        self.format = format
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields = metadata
        event.metadata?.forEach { fields[$0.key] = $0.value }
        let time = Date.ISO8601FormatStyle(includingFractionalSeconds: true).format(Date())
        var line: String
        switch format {
        case .json:
            var object: [String: String] = ["time": time, "level": "\(event.level)", "logger": label, "msg": event.message.description]
            for (key, value) in fields { object[key] = "\(value)" }
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
            line = String(decoding: data, as: UTF8.self)
        case .text:
            line = "time=\(time) level=\(event.level) logger=\(label) msg=\(quoted(event.message.description))"
            for key in fields.keys.sorted() { line += " \(key)=\(quoted("\(fields[key]!)"))" }
        }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    private func quoted(_ value: String) -> String {
        if !value.isEmpty && !value.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" || $0.isNewline }) { return value }
        return "\"" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n") + "\""
    }
}

extension StructuredLogHandler {
    /// Routes every logger of the process through this handler. Call once, first thing in main.
    public static func bootstrap(level: Logger.Level, format: LogFormat) {
        LoggingSystem.bootstrap { label in StructuredLogHandler(label: label, level: level, format: format) }
    }
}
