/// A line diff in unified form (`--- a/name`, `+++ b/name`, `@@ -l,s +l,s @@` hunks with two lines of context,
/// a line removed before the one that replaces it), from the longest common subsequence of the lines, ending in
/// a newline; empty when the texts are equal. Past 4 million line pairs it shows the whole file replaced.
public enum TextDiff {
    public static func unified(from old: String, to new: String, name: String) -> String {
        let a = textLines(old), b = textLines(new)
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
                } else if i < a.count && (j == b.count || lcs[i + 1][j] >= lcs[i][j + 1]) {
                    lines.append(("-", a[i])); i += 1
                } else {
                    lines.append(("+", b[j])); j += 1
                }
            }
        }
        // Keep changed lines and two lines of context around them.
        let changed = lines.indices.filter { lines[$0].0 != " " }
        guard !changed.isEmpty else { return "" }
        var keep = Set<Int>()
        for index in changed { for k in max(0, index - 2)...min(lines.count - 1, index + 2) { keep.insert(k) } }
        // Each merged line's number in the old and in the new text (1-based, before the line).
        var oldLine = [Int](), newLine = [Int]()
        var o = 1, n = 1
        for (mark, _) in lines {
            oldLine.append(o)
            newLine.append(n)
            if mark != "+" { o += 1 }
            if mark != "-" { n += 1 }
        }
        var out = ["--- a/\(name)", "+++ b/\(name)"]
        var hunk: [Int] = []
        func flush() {
            guard let first = hunk.first else { return }
            let olds = hunk.filter { lines[$0].0 != "+" }.count, news = hunk.filter { lines[$0].0 != "-" }.count
            // An empty side starts at the line before (as diff -u writes it).
            out.append("@@ -\(olds == 0 ? oldLine[first] - 1 : oldLine[first]),\(olds) +\(news == 0 ? newLine[first] - 1 : newLine[first]),\(news) @@")
            out += hunk.map { "\(lines[$0].0)\(lines[$0].1)" }
            hunk = []
        }
        for index in keep.sorted() {
            if let last = hunk.last, index != last + 1 { flush() }
            hunk.append(index)
        }
        flush()
        return out.joined(separator: "\n") + "\n"
    }

    /// The lines of a text; a final newline ends the last line and starts none.
    static func textLines(_ text: String) -> [String] {
        guard !text.isEmpty else { return [] }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if text.hasSuffix("\n") { lines.removeLast() }
        return lines
    }
}
