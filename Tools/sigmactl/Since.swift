import Foundation

/// `--since`: a duration back from now ("90s", "10m", "2h", "1d", or plain seconds) or an RFC 3339 time
/// ("2026-12-04T10:00:00Z", fractions and offsets allowed).
enum Since {
    static let help = "a duration back from now (90s, 10m, 2h, 1d) or an RFC 3339 time (2026-12-04T10:00:00Z)"

    /// The duration in seconds; nil when the text is not one.
    static func seconds(_ text: String) -> Double? {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        if let unit = text.last.flatMap({ units[$0] }), let count = Double(text.dropLast()), count >= 0 { return count * unit }
        return Double(text).flatMap { $0 >= 0 ? $0 : nil }
    }

    /// The moment meant, in Unix milliseconds (at least 1); nil when the text is neither form.
    static func unixMs(_ text: String, now: Date = Date()) -> Int64? {
        if let seconds = seconds(text) { return max(1, Int64((now.timeIntervalSince1970 - seconds) * 1000)) }
        let plain = ISO8601DateFormatter()
        let fractional = ISO8601DateFormatter()
        fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        guard let date = plain.date(from: text) ?? fractional.date(from: text) else { return nil }
        return max(1, Int64(date.timeIntervalSince1970 * 1000))
    }
}
