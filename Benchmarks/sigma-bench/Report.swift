import Foundation

/// One measured figure next to its in-run baseline. Every sigma-bench command reports these.
struct Figure {
    enum Target {
        /// value / baseline must be at most this.
        case maxRatio(Double)
        /// value must be at least this.
        case minValue(Double)
        /// value must be at most this.
        case maxValue(Double)
        /// value / baseline must be at least this.
        case minRatio(Double)
        case none
    }

    let name: String
    let value: Double
    let unit: String
    let baseline: Double
    let target: Target

    var ratio: Double { baseline == 0 ? 0 : value / baseline }

    var met: Bool? {
        switch target {
        case .maxRatio(let limit): ratio <= limit
        case .minValue(let limit): value >= limit
        case .maxValue(let limit): value <= limit
        case .minRatio(let limit): ratio >= limit
        case .none: nil
        }
    }

    var targetText: String {
        switch target {
        case .maxRatio(let limit): "≤ \(limit)× baseline"
        case .minValue(let limit): "≥ \(format(limit)) \(unit)"
        case .maxValue(let limit): "≤ \(format(limit)) \(unit)"
        case .minRatio(let limit): "≥ \(limit)× baseline"
        case .none: "-"
        }
    }

    var json: [String: Any] {
        var object: [String: Any] = ["name": name, "value": value, "unit": unit, "baseline": baseline, "ratio": ratio]
        object["target"] = targetText
        object["met"] = met.map { $0 as Any } ?? NSNull()
        return object
    }
}

func format(_ value: Double) -> String {
    value >= 100 ? String(format: "%.0f", value) : String(format: "%.2f", value)
}

struct Report {
    var title: String
    var figures: [Figure] = []
    var notes: [String] = []

    var markdown: String {
        var lines = ["| figure | value | baseline | ratio | target | met |", "|---|---|---|---|---|---|"]
        for f in figures {
            let met = f.met.map { $0 ? "yes" : "NO" } ?? "-"
            lines.append("| \(f.name) | \(format(f.value)) \(f.unit) | \(format(f.baseline)) \(f.unit) | \(String(format: "%.2f", f.ratio)) | \(f.targetText) | \(met) |")
        }
        return lines.joined(separator: "\n") + "\n" + notes.map { "\n- \($0)" }.joined() + "\n"
    }

    var table: String {
        let header = ["FIGURE", "VALUE", "BASELINE", "RATIO", "TARGET", "MET"]
        let rows = figures.map { f in
            [f.name, "\(format(f.value)) \(f.unit)", "\(format(f.baseline)) \(f.unit)", String(format: "%.2f", f.ratio),
             f.targetText, f.met.map { $0 ? "yes" : "NO" } ?? "-"]
        }
        let widths = header.indices.map { c in ([header] + rows).map { $0[c].count }.max()! }
        return ([header] + rows).map { row in
            row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "   ")
        }.joined(separator: "\n")
    }

    func jsonData() throws -> Data {
        try JSONSerialization.data(withJSONObject: ["figures": figures.map(\.json)], options: [.prettyPrinted, .sortedKeys])
    }
}

/// Percentile of sorted samples.
func percentile(_ sorted: [Double], _ p: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}
