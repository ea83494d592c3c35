import Foundation
import Testing
import TestSupport

/// Comments point only at files that exist: every Markdown, Swift, proto, Python, shell or C file a comment
/// names is in the repository (as that path, or by that name somewhere in it).
@Suite struct CommentReferenceTests {
    @Test func everyFileACommentNamesExists() throws {
        let root = packageRoot.path
        var names: Set<String> = [], paths: Set<String> = []
        let walker = try #require(FileManager.default.enumerator(atPath: root))
        for case let file as String in walker {
            if file.hasPrefix(".build") || file.hasPrefix(".git/") { walker.skipDescendants(); continue }
            paths.insert(file)
            names.insert((file as NSString).lastPathComponent)
        }
        let reference = try NSRegularExpression(pattern: #"(?<![\w/.-])([\w-]+(?:/[\w.-]+)*\.(?:md|swift|proto|py|sh|c))\b"#)
        var checked = 0
        for (path, text) in CodeSizeTests.swiftFiles(in: CodeSizeTests.folders + ["Tests"]) {
            for line in text.split(separator: "\n") {
                guard let comment = line.range(of: "//") else { continue }
                let note = String(line[comment.upperBound...])
                for match in reference.matches(in: note, range: NSRange(note.startIndex..., in: note)) {
                    guard let range = Range(match.range(at: 1), in: note) else { continue }
                    let named = String(note[range])
                    checked += 1
                    #expect(paths.contains(named) || names.contains((named as NSString).lastPathComponent),
                            "\(path): a comment names \(named), which is not in the repository")
                }
            }
        }
        #expect(checked > 20, "only \(checked) references found")
    }
}
