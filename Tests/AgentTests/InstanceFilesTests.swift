import Foundation
import NodeRuntime
import Testing

/// Files the agent writes into an instance stay inside its root, whatever the instance (or its image) put there.
@Suite struct InstanceFilesTests {
    /// A fake instance root and a folder beside it standing for the host; both removed afterwards.
    final class Scene: Sendable {
        let base = NSTemporaryDirectory() + "sigma-files-\(UUID().uuidString.prefix(8))"
        var root: String { base + "/rootfs" }
        var host: String { base + "/host" }

        init() throws {
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: host, withIntermediateDirectories: true)
            try Data("the host's own\n".utf8).write(to: URL(fileURLWithPath: host + "/passwd"))
        }

        deinit { try? FileManager.default.removeItem(atPath: base) }

        /// Everything under the host folder: must stay exactly ["passwd"] with its content.
        func hostUnchanged() -> Bool {
            (try? FileManager.default.contentsOfDirectory(atPath: host)) == ["passwd"]
                && contents(host + "/passwd") == "the host's own\n"
        }

        func write(_ path: String, _ text: String = "config\n", mode: mode_t = 0o644) throws {
            try InstanceFiles.write(Data(text.utf8), to: path, inRoot: root, mode: mode)
        }
    }

    @Test func writesInPlaceAndMakesMissingFolders() throws {
        let scene = try Scene()
        try scene.write("/conf/deep/app.conf", "one\n", mode: 0o600)
        let path = scene.root + "/conf/deep/app.conf"
        #expect(contents(path) == "one\n")
        let before = try FileManager.default.attributesOfItem(atPath: path)
        #expect((before[.posixPermissions] as? Int) == 0o600)
        try scene.write("/conf/deep/app.conf", "two, and longer than one\n")
        try scene.write("/conf/deep/app.conf", "3\n")
        let after = try FileManager.default.attributesOfItem(atPath: path)
        #expect(contents(path) == "3\n")
        #expect(before[.systemFileNumber] as? Int == after[.systemFileNumber] as? Int)  // the same inode
        #expect((after[.posixPermissions] as? Int) == 0o644)
    }

    @Test func aSymbolicLinkAnywhereOnThePathIsRefused() throws {
        let scene = try Scene()
        let links: [(String, String, String)] = [
            ("conf", scene.host, "/conf/app.conf"),  // the folder itself, absolute (as `ln -s /tmp/x /conf` on the host)
            ("etc-link", "/etc", "/etc-link/profile.d/x.sh"),  // absolute, as seen from the host
            ("rel", "../host", "/rel/app.conf"),  // relative, climbing out
            ("passwd", scene.host + "/passwd", "/passwd"),  // the file itself
            ("inside", "/conf", "/inside/app.conf"),  // even one pointing inside the root
        ]
        try FileManager.default.createDirectory(atPath: scene.root + "/a/b", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: scene.root + "/a/b/c", withDestinationPath: scene.host)
        for (name, target, _) in links {
            try FileManager.default.createSymbolicLink(atPath: scene.root + "/" + name, withDestinationPath: target)
        }
        for path in links.map(\.2) + ["/a/b/c/app.conf", "/a/b/c/new/app.conf"] {
            let refusal = #expect(throws: InstanceFiles.Refused.self, "\(path)") { try scene.write(path, "pwned\n") }
            #expect(refusal?.reason.contains("symbolic link") == true, "\(path): \(refusal?.reason ?? "")")
        }
        #expect(scene.hostUnchanged())
        #expect(!FileManager.default.fileExists(atPath: "/etc/profile.d/x.sh"))
    }

    @Test func fifosDevicesFoldersAndFilesInTheWayAreRefusedWithoutBlocking() throws {
        let scene = try Scene()
        #expect(mkfifo(scene.root + "/fifo", 0o644) == 0)
        // A device node the instance could make with CAP_MKNOD: /dev/null's numbers (1, 3).
        #expect(mknod(scene.root + "/device", S_IFCHR | 0o666, dev_t(1 << 8 | 3)) == 0)
        try FileManager.default.createDirectory(atPath: scene.root + "/folder", withIntermediateDirectories: true)
        try Data().write(to: URL(fileURLWithPath: scene.root + "/file"))
        let cases = [
            ("/fifo", "not a regular file"), ("/device", "not a regular file"), ("/folder", "is a folder"),
            ("/file/app.conf", "not a folder"), ("/fifo/app.conf", "not a folder"),
        ]
        for (path, reason) in cases {
            let refusal = #expect(throws: InstanceFiles.Refused.self, "\(path)") { try scene.write(path) }
            #expect(refusal?.reason.contains(reason) == true, "\(path): \(refusal?.reason ?? "")")
        }
        #expect(scene.hostUnchanged())
    }

    @Test func pathsThatAreNotAbsoluteInsideTheInstanceAreRefused() throws {
        let scene = try Scene()
        for path in ["", "/", "conf/app.conf", "/conf/../../host/passwd", "/./x", "/a\0b"] {
            #expect(throws: InstanceFiles.Refused.self, "\(path)") { try scene.write(path) }
        }
        #expect(scene.hostUnchanged())
    }

    /// The instance swaps a folder and a link to the host under the writer, as fast as it can: whatever the
    /// interleaving, nothing ever lands outside the root (a sample of the real filesystem after every write).
    @Test func aLinkSwappedInDuringTheWriteNeverLeadsOutside() throws {
        let scene = try Scene()
        let folder = scene.root + "/conf", parked = scene.root + "/conf.real"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let stop = Atomic(false), done = DispatchSemaphore(value: 0)
        let swapper = Thread { [host = scene.host] in
            while !stop.load() {
                rename(folder, parked)
                symlink(host, folder)
                unlink(folder)
                rename(parked, folder)
            }
            done.signal()
        }
        swapper.start()
        defer {
            stop.store(true)
            done.wait()
        }
        var written = 0, refused = 0
        for round in 0..<2000 {
            do {
                try scene.write("/conf/app.conf", "round \(round)\n")
                written += 1
            } catch is InstanceFiles.Refused {
                refused += 1
            }
            #expect(scene.hostUnchanged(), "round \(round)")
        }
        #expect(written + refused == 2000)
    }
}

extension InstanceFilesTests {
    /// An OCI image that ships `/conf` as a link to a host folder: config for its first start is refused, the
    /// host folder stays as it was (the overlay's root is resolved like any other).
    @Test func aLinkShippedInAnImageIsRefusedAtTheFirstStart() async throws {
        let scene = try Scene()
        guard case .ociLayout(let demo, let tag) = try ImageReference(parsing: try await DemoImage.shared.reference()) else {
            throw HarnessError("the demo image is not a layout")
        }
        let umoci = try #require(Subprocess.find("umoci"))
        let layout = scene.base + "/layout", bundle = scene.base + "/bundle"
        try await Subprocess.check("/bin/cp", ["-a", demo, layout])
        try await Subprocess.check(umoci, ["unpack", "--image", "\(layout):\(tag)", bundle])
        try FileManager.default.createSymbolicLink(atPath: bundle + "/rootfs/conf", withDestinationPath: scene.host)
        try await Subprocess.check(umoci, ["repack", "--image", "\(layout):escape", bundle])
        try await withRuntime { runtime in
            let root = runtime.directory(of: "escape") + "/rootfs"
            let request = LaunchRequest(id: "escape", image: .ociLayout(path: layout, tag: "escape"), command: ["/bin/sh", "-c", "sleep 60"])
            let failure = await #expect(throws: RuntimeError.self) {
                try await runtime.start(request) { _ in
                    #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: root + "/conf")) == scene.host)
                    try InstanceFiles.write(Data("pwned\n".utf8), to: "/conf/app.conf", inRoot: root, mode: 0o644)
                }
            }
            #expect("\(failure.map { "\($0)" } ?? "")".contains("symbolic link"))
        }
        #expect(scene.hostUnchanged())
    }

    /// An image whose working folder is one of runc's descriptors under /proc (CVE-2024-21626's escape on runc
    /// before 1.1.12) never starts.
    @Test func anImageWorkingFolderUnderProcIsRefused() async throws {
        let scene = try Scene()
        guard case .ociLayout(let demo, let tag) = try ImageReference(parsing: try await DemoImage.shared.reference()) else {
            throw HarnessError("the demo image is not a layout")
        }
        let umoci = try #require(Subprocess.find("umoci"))
        let layout = scene.base + "/layout"
        try await Subprocess.check("/bin/cp", ["-a", demo, layout])
        for (index, folder) in ["/proc/self/fd/7", "/../proc/self/fd/8", "relative"].enumerated() {
            try await Subprocess.check(umoci, ["config", "--image", "\(layout):\(tag)", "--tag", "cwd\(index)", "--config.workingdir", folder])
            try await withRuntime { runtime in
                let request = LaunchRequest(id: "cwd\(index)", image: .ociLayout(path: layout, tag: "cwd\(index)"), command: ["/bin/pwd"])
                await #expect(throws: RuntimeError.self, "\(folder)") { try await runtime.start(request) }
                let ending = await runtime.ending(of: "cwd\(index)")
                #expect(ending?.description.contains("working folder") == true, "\(folder)")
            }
        }
    }
}

/// A flag shared with the swapping thread.
final class Atomic<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func load() -> Value { lock.withLock { value } }
    func store(_ new: Value) { lock.withLock { value = new } }
}
