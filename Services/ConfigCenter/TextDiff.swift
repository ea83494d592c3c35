/// A line diff in unified form (`--- a/name`, `+++ b/name`, `@@` hunks with two lines of context), from the
/// longest common subsequence of the lines. Past 4 million line pairs it shows the whole file replaced.
enum TextDiff {
    static func unified(from old: String, to new: String, name: String) -> String {
        let a = old.isEmpty ? [] : old.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let b = new.isEmpty ? [] : new.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var lines: [(Character, String)] = []
        if a.count * b.count > 4_000_000 {
            lines = a.map { ("-", $0) } + b.map { ("+", $0) }
        } else {
            // lcs[i][j]: length of the common subsequence of a[i...] and b[j...].
            var lcs = Array(repeating: Array(repeating: 0, count: b.count + 1), count: a.count + 1)
            for i in stride(from: a.count - 1, through: 0, by: -1) {
                for j in stride(from: b.count - 1, through: 0, by: -1) {
                    lcs[i][j] = a[i] == b[j] ? lcs[i + 1][j + 1] + 1 : max(lcs[i + 1][j], lcs[i][j + 1])
                }
            }
            var i = 0, j = 0
            while i < a.count || j < b.count {
                if i < a.count && j < b.count && a[i] == b[j] {
                    lines.append((" ", a[i])); i += 1; j += 1
                } else if j < b.count && (i == a.count || lcs[i][j + 1] >= lcs[i + 1][j]) {
                    lines.append(("+", b[j])); j += 1
                } else {
                    lines.append(("-", a[i])); i += 1
                }
            }
        }
        // Keep changed lines and two lines of context around them.
        let changed = lines.indices.filter { lines[$0].0 != " " }
        guard !changed.isEmpty else { return "" }
        var keep = Set<Int>()
        for index in changed { for k in max(0, index - 2)...min(lines.count - 1, index + 2) { keep.insert(k) } }
        var out = ["--- a/\(name)", "+++ b/\(name)"]
        var previous = -2
        for index in keep.sorted() {
            if index != previous + 1 { out.append("@@ line \(index + 1) @@") }
            out.append("\(lines[index].0)\(lines[index].1)")
            previous = index
        }
        return out.joined(separator: "\n")
    }
}
