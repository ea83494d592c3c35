import Foundation

/// A seccomp profile in the format of Docker's and the containers project's default (podman's
/// /usr/share/containers/seccomp.json): rules gated by capabilities, architectures and kernel versions
/// (`includes`/`excludes`). An OCI runtime knows none of those keys, so the profile is resolved for each
/// instance (``resolved(capabilities:)``) into the plain rules of the runtime spec's `linux.seccomp`.
public struct SeccompProfile: Sendable, Decodable {
    public var defaultAction: String
    public var defaultErrnoRet: UInt32?
    public var archMap: [ArchitectureMap]?
    public var syscalls: [Rule]

    public struct ArchitectureMap: Sendable, Decodable {
        public var architecture: String
        public var subArchitectures: [String]?
    }

    public struct Rule: Sendable, Decodable {
        public var names: [String]?
        public var name: String?
        public var action: String
        public var errnoRet: UInt32?
        public var args: [OCIConfig.SeccompArgument]?
        public var includes: Filter?
        public var excludes: Filter?

        var allNames: [String] { (names ?? []) + (name.map { [$0] } ?? []) }
    }

    public struct Filter: Sendable, Decodable {
        public var caps: [String]?
        public var arches: [String]?
        public var minKernel: String?
    }

    /// The machine a profile is resolved for: its architecture as the profile names it (Go's names:
    /// "amd64", "arm64", ...), as libseccomp names it, and the running kernel's version.
    public struct Machine: Sendable {
        public var arch: String
        public var scmpArch: String
        public var kernel: [Int]

        public init(arch: String, scmpArch: String, kernel: [Int]) {
            self.arch = arch
            self.scmpArch = scmpArch
            self.kernel = kernel
        }

        public static let current: Machine = {
            var name = utsname()
            uname(&name)
            func field<T>(_ value: T) -> String {
                withUnsafeBytes(of: value) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            }
            let machine = field(name.machine)
            let arches = ["x86_64": ("amd64", "SCMP_ARCH_X86_64"), "aarch64": ("arm64", "SCMP_ARCH_AARCH64"),
                          "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"), "s390x": ("s390x", "SCMP_ARCH_S390X"),
                          "riscv64": ("riscv64", "SCMP_ARCH_RISCV64")]
            let (arch, scmp) = arches[machine] ?? (machine, "SCMP_ARCH_NATIVE")
            return Machine(arch: arch, scmpArch: scmp, kernel: SeccompProfile.version(field(name.release)))
        }()
    }

    public enum LoadError: Error, CustomStringConvertible {
        case unreadable(String, String)
        case invalid(String, String)

        public var description: String {
            switch self {
            case .unreadable(let path, let why): return "the seccomp profile \(path) can't be read: \(why)"
            case .invalid(let path, let why): return "the seccomp profile \(path) is not a seccomp profile: \(why)"
            }
        }
    }

    public static func load(path: String) throws -> SeccompProfile {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw LoadError.unreadable(path, "\(error.localizedDescription)")
        }
        do {
            let profile = try JSONDecoder().decode(SeccompProfile.self, from: data)
            guard !profile.syscalls.isEmpty else { throw LoadError.invalid(path, "it has no rules") }
            return profile
        } catch let error as LoadError {
            throw error
        } catch {
            throw LoadError.invalid(path, "\(error)")
        }
    }

    /// "6.18.0-1-amd64" → [6, 18, 0].
    static func version(_ text: String) -> [Int] {
        text.split(whereSeparator: { !$0.isNumber }).prefix(3).compactMap { Int($0) }
    }

    /// Calls an instance may make only with the capability named, whatever the profile says: the profile
    /// this is written for leaves them to the kernel's checks (it is also made for rootless containers), and
    /// those checks pass in a user namespace the instance makes itself (`unshare -Urm`, then `mount`).
    /// Docker's default profile gates the same calls.
    static let gated: [String: [String]] = [
        "CAP_SYS_ADMIN": [
            "mount", "umount", "umount2", "unshare", "setns", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick",
            "move_mount", "open_tree", "mount_setattr", "name_to_handle_at", "quotactl", "quotactl_fd", "bpf",
            "fanotify_init", "lookup_dcookie", "perf_event_open", "setdomainname", "sethostname", "clone3",
        ],
        "CAP_SYSLOG": ["syslog"],
    ]
    /// The kernel keyring is not namespaced: no instance gets it (as in Docker's profile).
    static let denied = ["keyctl", "add_key", "request_key"]
    /// clone(2)'s namespace flags: NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
    static let namespaceFlags: [UInt64] = [0x0002_0000, 0x0200_0000, 0x0400_0000, 0x0800_0000, 0x1000_0000, 0x2000_0000, 0x4000_0000]

    static let EPERM: UInt32 = 1
    static let ENOSYS: UInt32 = 38

    /// The runtime spec's rules for an instance that holds `capabilities` on `machine`.
    public func resolved(capabilities: Set<String>, machine: Machine = .current) -> OCIConfig.Seccomp {
        func applies(_ rule: Rule) -> Bool {
            if let includes = rule.includes {
                if let caps = includes.caps, !caps.isEmpty, !Set(caps).isSubset(of: capabilities) { return false }
                if let arches = includes.arches, !arches.isEmpty, !arches.contains(machine.arch) { return false }
                if let minKernel = includes.minKernel, !minKernel.isEmpty,
                   machine.kernel.lexicographicallyPrecedes(Self.version(minKernel)) { return false }
            }
            if let excludes = rule.excludes {
                if let caps = excludes.caps, !Set(caps).isDisjoint(with: capabilities) { return false }
                if let arches = excludes.arches, arches.contains(machine.arch) { return false }
            }
            return true
        }
        var refused = Set(Self.denied)
        for (capability, names) in Self.gated where !capabilities.contains(capability) { refused.formUnion(names) }
        let cloneRestricted = !capabilities.contains("CAP_SYS_ADMIN")
        if cloneRestricted { refused.insert("clone") }

        var rules: [OCIConfig.SeccompRule] = []
        for rule in syscalls where applies(rule) {
            let names = rule.allNames.filter { !refused.contains($0) }
            guard !names.isEmpty else { continue }
            let args = rule.args?.isEmpty == false ? rule.args : nil
            rules.append(OCIConfig.SeccompRule(names: names, action: rule.action, errnoRet: rule.errnoRet, args: args))
        }
        // clone3 passes its flags in memory a filter can't read: ENOSYS sends the C library back to clone(2).
        let clone3 = refused.contains("clone3")
        if !refused.subtracting(["clone", "clone3"]).isEmpty {
            rules.append(OCIConfig.SeccompRule(
                names: refused.subtracting(["clone", "clone3"]).sorted(), action: "SCMP_ACT_ERRNO", errnoRet: Self.EPERM, args: nil))
        }
        if clone3 { rules.append(OCIConfig.SeccompRule(names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: Self.ENOSYS, args: nil)) }
        if cloneRestricted {
            // The flags are clone's first argument (its second on s390).
            let index: UInt = machine.arch.hasPrefix("s390") ? 1 : 0
            let mask = Self.namespaceFlags.reduce(0, |)
            rules.append(OCIConfig.SeccompRule(
                names: ["clone"], action: "SCMP_ACT_ALLOW", errnoRet: nil,
                args: [OCIConfig.SeccompArgument(index: index, value: mask, valueTwo: 0, op: "SCMP_CMP_MASKED_EQ")]))
            for flag in Self.namespaceFlags {
                rules.append(OCIConfig.SeccompRule(
                    names: ["clone"], action: "SCMP_ACT_ERRNO", errnoRet: Self.EPERM,
                    args: [OCIConfig.SeccompArgument(index: index, value: flag, valueTwo: flag, op: "SCMP_CMP_MASKED_EQ")]))
            }
        }
        var architectures: [String] = []
        if let entry = archMap?.first(where: { $0.architecture == machine.scmpArch }) {
            architectures = [entry.architecture] + (entry.subArchitectures ?? [])
        }
        return OCIConfig.Seccomp(
            defaultAction: defaultAction, defaultErrnoRet: defaultErrnoRet, architectures: architectures, syscalls: rules)
    }
}
