/// The variables a config template may use, checked when a version is published — not when an instance starts.
///
/// | variable | value |
/// |---|---|
/// | `instance.id`, `instance.name` (APP-ORDINAL), `instance.ordinal`, `instance.ip`, `instance.node` | this instance |
/// | `host.ip`, `host.idc`, `host.ports.NAME` | its node, and the host port mapped to its container port NAME |
/// | `app.name`, `config.version` | the app, and the config version being rendered |
/// | `{{#peers}}…{{/peers}}` | every instance of the app (self included), by ordinal; inside: `id`, `name`, `ordinal`, `ip`, `host_ip`, `node`, `idc`, `state`, `ready`, `ports.NAME`, `first`, `last` |
///
/// Sections (`{{#x}}`, `{{^x}}`) may test any of these; `{{.}}`, partials (`{{>…}}`) and delimiter changes are
/// not allowed.
public enum ConfigTemplate {
    public struct Problem: Error, Hashable, CustomStringConvertible {
        public let variable: String
        public let reason: String
        public var description: String { "{{\(variable)}}: \(reason)" }
    }

    static let instanceFields: Set<String> = ["id", "name", "ordinal", "ip", "node"]
    static let hostFields: Set<String> = ["ip", "idc"]
    static let peerFields: Set<String> = ["id", "name", "ordinal", "ip", "host_ip", "node", "idc", "state", "ready", "first", "last"]

    /// Every tag that is not allowed, in order; empty when the template is fine.
    public static func problems(in text: String) -> [Problem] {
        var problems: [Problem] = []
        var sections: [String] = []
        var rest = Substring(text)
        while let open = rest.range(of: "{{") {
            let triple = rest[open.upperBound...].hasPrefix("{")
            let closer = triple ? "}}}" : "}}"
            let start = triple ? rest.index(after: open.upperBound) : open.upperBound
            guard let close = rest[start...].range(of: closer) else {
                problems.append(Problem(variable: String(rest[open.lowerBound...].prefix(30)), reason: "tag not closed"))
                break
            }
            let tag = rest[start..<close.lowerBound].trimmingSpaces
            rest = rest[close.upperBound...]
            guard let sigil = tag.first else {
                problems.append(Problem(variable: "", reason: "empty tag"))
                continue
            }
            switch sigil {
            case "!":
                continue
            case ">", "=", "%":
                problems.append(Problem(variable: tag, reason: sigil == ">" ? "partials are not supported"
                    : sigil == "=" ? "delimiter changes are not supported" : "pragmas are not supported"))
            case "#", "^":
                let name = tag.dropFirst().trimmingSpaces
                if let reason = check(name, inside: sections) { problems.append(Problem(variable: name, reason: reason)) }
                sections.append(name)
            case "/":
                let name = tag.dropFirst().trimmingSpaces
                if sections.last == name {
                    sections.removeLast()
                } else {
                    problems.append(Problem(variable: tag, reason: sections.last.map { "closes \(name) but \($0) is open" } ?? "closes a section that is not open"))
                }
            default:
                let name = sigil == "&" ? tag.dropFirst().trimmingSpaces : tag
                if name == "peers" {
                    problems.append(Problem(variable: name, reason: "peers is a list: use {{#peers}}…{{/peers}}"))
                } else if let reason = check(name, inside: sections) {
                    problems.append(Problem(variable: name, reason: reason))
                }
            }
        }
        for open in sections.reversed() { problems.append(Problem(variable: "#\(open)", reason: "section not closed")) }
        return problems
    }

    /// nil when `name` is a known variable where it stands.
    static func check(_ name: String, inside sections: [String]) -> String? {
        if name == "." { return "{{.}} is not supported; name the variable" }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard !parts.contains("") else { return "not a variable name" }
        if sections.contains("peers") && isPeerVariable(parts) { return nil }
        switch parts[0] {
        case "instance" where parts.count == 2 && instanceFields.contains(parts[1]): return nil
        case "host" where parts.count == 2 && hostFields.contains(parts[1]): return nil
        case "host" where parts.count == 3 && parts[1] == "ports" && isPortName(parts[2]): return nil
        case "app" where parts == ["app", "name"]: return nil
        case "config" where parts == ["config", "version"]: return nil
        case "peers" where parts.count == 1: return nil
        default:
            let known = "instance.{id,name,ordinal,ip,node}, host.{ip,idc,ports.NAME}, app.name, config.version, peers"
            return sections.contains("peers") ? "unknown variable (inside peers: \(peerFields.sorted().joined(separator: ", ")), ports.NAME; outside: \(known))"
                : "unknown variable (known: \(known))"
        }
    }

    static func isPeerVariable(_ parts: [String]) -> Bool {
        (parts.count == 1 && peerFields.contains(parts[0])) || (parts.count == 2 && parts[0] == "ports" && isPortName(parts[1]))
    }

    static func isPortName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 63 && name.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") }
    }
}

extension StringProtocol {
    fileprivate var trimmingSpaces: String { trimmed }
}
