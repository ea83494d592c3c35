import Foundation
import NodeRuntime
import Testing

/// The containers project's profile resolved for an instance's capabilities and machine into the runtime
/// spec's plain rules (which know nothing of `includes`/`excludes`).
@Suite struct SeccompTests {
    static let amd64 = SeccompProfile.Machine(arch: "amd64", scmpArch: "SCMP_ARCH_X86_64", kernel: [6, 1, 0])
    static let defaultCapabilities: Set<String> = [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_SETGID", "CAP_SETUID",
        "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
    ]

    static func allowed(_ seccomp: OCIConfig.Seccomp, _ name: String) -> [OCIConfig.SeccompRule] {
        seccomp.syscalls.filter { $0.action == "SCMP_ACT_ALLOW" && $0.names.contains(name) }
    }

    static func errno(_ seccomp: OCIConfig.Seccomp, _ name: String) -> UInt32? {
        seccomp.syscalls.first { $0.action == "SCMP_ACT_ERRNO" && $0.names.contains(name) && $0.args == nil }?.errnoRet
    }

    @Test func withoutSysAdminNamespacesMountsAndTheKeyringAreRefused() throws {
        let seccomp = try systemSeccompProfile().resolved(capabilities: Self.defaultCapabilities, machine: Self.amd64)
        #expect(seccomp.defaultAction == "SCMP_ACT_ERRNO")
        #expect(seccomp.architectures == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        for name in ["mount", "umount2", "unshare", "setns", "pivot_root", "fsopen", "fsmount", "move_mount", "open_tree",
                     "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "syslog"] {
            #expect(Self.allowed(seccomp, name).isEmpty, "\(name) is allowed")
            #expect(Self.errno(seccomp, name) == 1, "\(name) is not EPERM")
        }
        // clone3's flags are out of a filter's reach: ENOSYS makes the C library fall back to clone(2), whose
        // flags are checked: allowed only without a namespace flag, EPERM with any.
        #expect(Self.allowed(seccomp, "clone3").isEmpty)
        #expect(Self.errno(seccomp, "clone3") == 38)
        let clone = Self.allowed(seccomp, "clone")
        #expect(clone.count == 1)
        #expect(clone.first?.args == [OCIConfig.SeccompArgument(index: 0, value: 0x7E02_0000, valueTwo: 0, op: "SCMP_CMP_MASKED_EQ")])
        let refusedFlags = seccomp.syscalls.filter { $0.names == ["clone"] && $0.action == "SCMP_ACT_ERRNO" }.compactMap { $0.args?.first?.value }
        #expect(refusedFlags.reduce(0, |) == 0x7E02_0000)
        // Ordinary calls stay, and so do the profile's own gates, resolved: arch_prctl for amd64 only,
        // open_by_handle_at refused without CAP_DAC_READ_SEARCH, chroot allowed with CAP_SYS_CHROOT.
        for name in ["read", "write", "openat", "socket", "execve", "wait4", "futex", "arch_prctl", "chroot"] {
            #expect(!Self.allowed(seccomp, name).isEmpty, "\(name) is not allowed")
        }
        #expect(Self.allowed(seccomp, "open_by_handle_at").isEmpty)
        #expect(Self.errno(seccomp, "open_by_handle_at") == 1)
        #expect(Self.allowed(seccomp, "s390_runtime_instr").isEmpty)
        // No rule keeps a key the runtime would ignore: every rule is plain.
        let encoded = String(decoding: try JSONEncoder().encode(seccomp), as: UTF8.self)
        #expect(!encoded.contains("includes") && !encoded.contains("excludes"))
    }

    @Test func capabilitiesAndArchitecturesChooseTheRules() throws {
        let profile = try systemSeccompProfile()
        let admin = profile.resolved(capabilities: Self.defaultCapabilities.union(["CAP_SYS_ADMIN", "CAP_DAC_READ_SEARCH"]), machine: Self.amd64)
        for name in ["mount", "unshare", "setns", "bpf", "clone3", "open_by_handle_at"] {
            #expect(!Self.allowed(admin, name).isEmpty, "\(name) is refused with CAP_SYS_ADMIN")
        }
        #expect(Self.allowed(admin, "clone").allSatisfy { $0.args == nil })
        let arm64 = profile.resolved(
            capabilities: Self.defaultCapabilities, machine: .init(arch: "arm64", scmpArch: "SCMP_ARCH_AARCH64", kernel: [6, 1]))
        #expect(arm64.architectures == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])
        #expect(Self.allowed(arm64, "arch_prctl").isEmpty)
        #expect(!Self.allowed(arm64, "set_tls").isEmpty)
    }

    @Test func minimumKernelsAndBadProfiles() throws {
        let base = NSTemporaryDirectory() + "sigma-seccomp-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: base) }
        let profile = """
            {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
              {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
              {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}}]}
            """
        try Data(profile.utf8).write(to: URL(fileURLWithPath: base + "/p.json"))
        let loaded = try SeccompProfile.load(path: base + "/p.json")
        let old = loaded.resolved(capabilities: [], machine: .init(arch: "amd64", scmpArch: "SCMP_ARCH_X86_64", kernel: [4, 4, 0]))
        let new = loaded.resolved(capabilities: [], machine: .init(arch: "amd64", scmpArch: "SCMP_ARCH_X86_64", kernel: [4, 19, 0]))
        #expect(Self.allowed(old, "ptrace").isEmpty)
        #expect(!Self.allowed(new, "ptrace").isEmpty)

        try Data("{\"defaultAction\": 3}".utf8).write(to: URL(fileURLWithPath: base + "/bad.json"))
        #expect(throws: SeccompProfile.LoadError.self) { try SeccompProfile.load(path: base + "/bad.json") }
        #expect(throws: SeccompProfile.LoadError.self) { try SeccompProfile.load(path: base + "/missing.json") }
        do {
            _ = try SeccompProfile.load(path: base + "/missing.json")
        } catch {
            #expect("\(error)".contains("missing.json can't be read"))
        }
    }
}
