import Foundation
import NodeRuntime
import Testing

/// cgroup v2 cannot run on this machine (cgroup v1 hybrid): its files are proven against a fake tree laid out
/// as the kernel lays it out, with the values the kernel starts a new cgroup with.
@Suite struct CgroupTests {
    func withFakeTree(_ version: CgroupVersion, _ body: (String) throws -> Void) throws {
        let root = NSTemporaryDirectory() + "sigma-fake-cgroup-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        if version == .v2 {
            try write("cpuset cpu io memory pids", root + "/cgroup.controllers")
            try write("", root + "/cgroup.subtree_control")
        }
        try body(root)
    }

    func write(_ text: String, _ path: String) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    }

    func read(_ path: String) -> String {
        String(decoding: FileManager.default.contents(atPath: path) ?? Data(), as: UTF8.self)
    }

    /// What the kernel puts in a new v2 cgroup.
    func populateV2(_ directory: String) throws {
        let files = [
            "cpu.max": "max 100000", "cpu.weight": "100", "memory.max": "max", "memory.swap.max": "max",
            "pids.max": "max", "pids.current": "3", "memory.current": "52428800", "cgroup.procs": "",
            "cgroup.subtree_control": "",
            "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 10\nnr_throttled 4\nthrottled_usec 2500",
            "memory.events": "low 0\nhigh 0\nmax 7\noom 2\noom_kill 1",
            "memory.stat": "anon 41943040\nfile 10485760\ninactive_file 8388608",
        ]
        for (name, value) in files { try write(value, directory + "/" + name) }
    }

    @Test func detectsTheHierarchy() throws {
        try withFakeTree(.v2) { root in #expect(CgroupVersion.detect(root: root) == .v2) }
        try withFakeTree(.v1) { root in #expect(CgroupVersion.detect(root: root) == .v1) }
    }

    @Test func v2LimitsGoToTheUnifiedFiles() throws {
        try withFakeTree(.v2) { root in
            // Parents that exist already carry the kernel's files.
            try FileManager.default.createDirectory(atPath: root + "/sigma/node-1", withIntermediateDirectories: true)
            try write("", root + "/sigma/cgroup.subtree_control")
            try write("", root + "/sigma/node-1/cgroup.subtree_control")
            let cgroup = Cgroup(root: root, version: .v2, path: "sigma/node-1/web-0")
            try cgroup.create()
            // Each parent hands the controllers down.
            #expect(read(root + "/cgroup.subtree_control") == "+cpu +memory +pids")
            #expect(read(root + "/sigma/cgroup.subtree_control") == "+cpu +memory +pids")
            #expect(read(root + "/sigma/node-1/cgroup.subtree_control") == "+cpu +memory +pids")
            let directory = root + "/sigma/node-1/web-0"
            try populateV2(directory)

            try cgroup.apply(CgroupLimits(cpuLimitMillis: 1500, cpuRequestMillis: 500, memoryLimitBytes: 2 << 30, pids: 4096))
            #expect(read(directory + "/cpu.max") == "150000 100000")
            #expect(read(directory + "/cpu.weight") == "20")  // 512 shares
            #expect(read(directory + "/memory.max") == "\(2 << 30)")
            #expect(read(directory + "/memory.swap.max") == "0")
            #expect(read(directory + "/pids.max") == "4096")

            let reading = try cgroup.read()
            #expect(reading.applied.cpuLimitMillis == 1500)
            #expect(reading.applied.memoryLimitBytes == 2 << 30)
            #expect(reading.applied.pids == 4096)
            #expect(abs(reading.applied.cpuRequestMillis - 500) <= 30)  // weight is coarser than shares
            #expect(reading.swapDisabled)
            #expect(reading.oomKills == 1)
            #expect(reading.throttledPeriods == 4)
            #expect(reading.throttledNanos == 2_500_000)
            #expect(reading.cpuNanos == 1_500_000)
            #expect(reading.memoryBytes == 52_428_800 - 8_388_608)
            #expect(reading.tasks == 3)

            // Limit 0 = unlimited.
            try cgroup.apply(CgroupLimits(cpuRequestMillis: 0, pids: 0))
            #expect(read(directory + "/cpu.max") == "max 100000")
            #expect(read(directory + "/memory.max") == "max")
            #expect(read(directory + "/pids.max") == "max")
            #expect(read(directory + "/memory.swap.max") == "0")
            #expect(read(directory + "/cpu.weight") == "1")
            let unlimited = try cgroup.read()
            #expect(unlimited.applied == CgroupLimits(pids: 0))
        }
    }

    @Test func v2RefusesToWriteFilesTheKernelDoesNotHave() throws {
        try withFakeTree(.v2) { root in
            let cgroup = Cgroup(root: root, version: .v2, path: "sigma/x")
            try cgroup.create()
            // No controller files: a kernel without the cpu controller enabled here.
            #expect(throws: CgroupError.self) { try cgroup.apply(CgroupLimits(cpuLimitMillis: 100)) }
        }
    }

    @Test func v1LimitsGoToEachController() throws {
        try withFakeTree(.v1) { root in
            for controller in ["cpu", "cpuacct", "memory", "pids"] {
                try FileManager.default.createDirectory(atPath: "\(root)/\(controller)", withIntermediateDirectories: true)
            }
            let cgroup = Cgroup(root: root, version: .v1, path: "/sigma/node-1/db-0/")
            try cgroup.create()
            let unlimited = "9223372036854771712"
            let files = [
                "cpu/cpu.cfs_period_us": "100000", "cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.shares": "1024",
                "cpu/cpu.stat": "nr_periods 0\nnr_throttled 0\nthrottled_time 0", "cpuacct/cpuacct.usage": "0",
                "memory/memory.limit_in_bytes": unlimited, "memory/memory.memsw.limit_in_bytes": unlimited,
                "memory/memory.swappiness": "60", "memory/memory.usage_in_bytes": "0", "memory/memory.stat": "",
                "memory/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0", "pids/pids.max": "max",
                "pids/pids.current": "1",
            ]
            for (file, value) in files {
                let parts = file.split(separator: "/")
                try write(value, "\(root)/\(parts[0])/sigma/node-1/db-0/\(parts[1])")
            }
            try cgroup.apply(CgroupLimits(cpuLimitMillis: 250, cpuRequestMillis: 2000, memoryLimitBytes: 512 << 20, pids: 64))
            let base = "\(root)/%@/sigma/node-1/db-0/"
            func value(_ controller: String, _ name: String) -> String { read(String(format: base, controller) + name) }
            #expect(value("cpu", "cpu.cfs_quota_us") == "25000")
            #expect(value("cpu", "cpu.shares") == "2048")
            #expect(value("memory", "memory.limit_in_bytes") == "\(512 << 20)")
            #expect(value("memory", "memory.memsw.limit_in_bytes") == "\(512 << 20)")
            #expect(value("memory", "memory.swappiness") == "0")
            #expect(value("pids", "pids.max") == "64")
            #expect(cgroup.runtimePath == "/sigma/node-1/db-0")
            let reading = try cgroup.read()
            #expect(reading.applied == CgroupLimits(cpuLimitMillis: 250, cpuRequestMillis: 2000, memoryLimitBytes: 512 << 20, pids: 64))
            #expect(reading.swapDisabled)
        }
    }

    @Test func limitsConvertTheWayTheKernelCounts() {
        #expect(CgroupLimits(cpuLimitMillis: 0).quotaMicros == nil)
        #expect(CgroupLimits(cpuLimitMillis: 1).quotaMicros == 1000)  // the kernel's minimum quota
        #expect(CgroupLimits(cpuLimitMillis: 4000).quotaMicros == 400_000)
        #expect(CgroupLimits(cpuRequestMillis: 0).shares == 2)
        #expect(CgroupLimits(cpuRequestMillis: 1000).shares == 1024)
        #expect(CgroupLimits(cpuRequestMillis: 1000).weight == 39)
        #expect(CgroupLimits(cpuRequestMillis: 0).weight == 1)
        #expect(CgroupLimits(cpuRequestMillis: 1_000_000).weight == 10000)
    }
}
