import Foundation

/// `get … --watch`: the listing, then every `interval` only what changed — a row whose cells differ, a new row,
/// and a row that is gone (shown once more, its last cell ending "(gone)"), keyed by the first column (events,
/// which never change, by the whole row). Columns keep the widths they had, widening as rows need.
final class TableWatch: @unchecked Sendable {
    @TaskLocal static var current: TableWatch?

    private var last: [String: [String]] = [:]
    private var order: [String] = []
    private var widths: [Int] = []
    private var started = false
    let keyedByRow: Bool

    init(keyedByRow: Bool) { self.keyedByRow = keyedByRow }

    func show(_ header: [String], _ rows: [[String]]) {
        var changed: [[String]] = []
        var seen: [String: [String]] = [:]
        var seenOrder: [String] = []
        for row in rows {
            let key = keyedByRow ? row.joined(separator: "\u{0}") : row.first ?? ""
            seen[key] = row
            seenOrder.append(key)
            if last[key] != row { changed.append(row) }
        }
        for key in order where seen[key] == nil && !keyedByRow {
            var gone = last[key]!
            gone[gone.count - 1] += gone[gone.count - 1].isEmpty ? "(gone)" : " (gone)"
            changed.append(gone)
        }
        last = seen
        order = seenOrder
        let lines = started ? changed : [header] + changed
        widths = header.indices.map { column in
            max(widths.indices.contains(column) ? widths[column] : 0, (([header] + changed).map { visibleWidth($0[column]) }.max() ?? 0))
        }
        for row in lines {
            print(row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell + String(repeating: " ", count: max(0, widths[index] - visibleWidth(cell)))
            }.joined(separator: "   "))
        }
        started = true
        fflush(nil)
    }
}

/// A table, or with `--watch` what changed in it since the last pass.
func showTable(_ header: [String], _ rows: [[String]]) {
    if let watch = TableWatch.current { watch.show(header, rows) } else { printTable(header, rows) }
}
