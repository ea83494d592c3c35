import Core
import Foundation
import Testing

/// The unified diff that `config diff`, `diff -f` and `rollout history --revision` print.
struct TextDiffTests {
    @Test func aChangedLineIsRemovedThenAddedWithItsLineNumbers() {
        let old = "a\nb\nc\nd\ne\nf\ng\n1\n2\nh\n", new = "a\nb\nc\nD\ne\nf\ng\n1\n2\nh\ni\n"
        #expect(TextDiff.unified(from: old, to: new, name: "x") == """
            --- a/x
            +++ b/x
            @@ -2,5 +2,5 @@
             b
             c
            -d
            +D
             e
             f
            @@ -9,2 +9,3 @@
             2
             h
            +i

            """)
        #expect(TextDiff.unified(from: old, to: old, name: "x") == "")
        #expect(TextDiff.unified(from: "", to: "a\n", name: "x") == "--- a/x\n+++ b/x\n@@ -0,0 +1,1 @@\n+a\n")
        #expect(TextDiff.unified(from: "a\n", to: "", name: "x") == "--- a/x\n+++ b/x\n@@ -1,1 +0,0 @@\n-a\n")
    }

    /// Over seeded random texts: applying the hunks to the old text by their headers gives the new one, and
    /// each hunk's counts match its lines.
    @Test func everyDiffAppliesBackToTheNewText() throws {
        var generator = SeededGenerator(seed: 7)
        for _ in 0..<500 {
            let old = (0..<Int.random(in: 0...12, using: &generator)).map { _ in ["a", "b", "c", "d"].randomElement(using: &generator)! }
            var new = old
            for _ in 0..<Int.random(in: 0...4, using: &generator) {
                let at = Int.random(in: 0...new.count, using: &generator)
                if Bool.random(using: &generator) || new.isEmpty { new.insert(["a", "e", "f"].randomElement(using: &generator)!, at: at) }
                else { new.remove(at: min(at, new.count - 1)) }
            }
            let text = { (lines: [String]) in lines.map { $0 + "\n" }.joined() }
            let diff = TextDiff.unified(from: text(old), to: text(new), name: "x")
            #expect(diff.isEmpty == (old == new))
            guard !diff.isEmpty else { continue }
            var result: [String] = [], consumed = 0
            var body = diff.split(separator: "\n", omittingEmptySubsequences: false).dropFirst(2).map(String.init)
            body.removeLast()
            var index = 0
            while index < body.count {
                let header = body[index].split(separator: " ")
                let oldRange = header[1].dropFirst().split(separator: ",").map { Int($0)! }
                let newRange = header[2].dropFirst().split(separator: ",").map { Int($0)! }
                let start = oldRange[1] == 0 ? oldRange[0] : oldRange[0] - 1
                result += old[consumed..<start]
                consumed = start
                index += 1
                var olds = 0, news = 0
                while index < body.count && !body[index].hasPrefix("@@") {
                    let line = body[index], content = String(line.dropFirst())
                    switch line.first {
                    case " ": result.append(content); consumed += 1; olds += 1; news += 1
                    case "-": #expect(old[consumed] == content); consumed += 1; olds += 1
                    default: result.append(content); news += 1
                    }
                    index += 1
                }
                #expect(olds == oldRange[1] && news == newRange[1], "\(diff)")
            }
            result += old[consumed...]
            #expect(result == new, "\(old) → \(new):\n\(diff)")
        }
    }
}
