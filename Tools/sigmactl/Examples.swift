/// The "Examples:" block of every verb's help, kept in one place: SigmactlHelpTests requires one for every verb,
/// runs each example through the parser and keeps each line within the 80 columns help is wrapped at.
enum Examples {
    /// `prose` (may be empty), then the examples of the verb at `path` ("get", "config publish").
    static func discussion(_ path: String, _ prose: String = "") -> String {
        let block = "Examples:\n" + (all[path] ?? []).map { "  " + $0 }.joined(separator: "\n")
        return prose.isEmpty ? block : prose + "\n\n" + block
    }

    static let all: [String: [String]] = [
        "apply": [
            "sigmactl apply -f web.yaml              # create or update, wait till it runs",
            "sigmactl apply -f web.yaml -f db.yaml   # several; -f apps/ takes a folder",
            "sigmactl get apps web -o yaml | sigmactl apply -f -",
            "sigmactl apply -f web.yaml --dry-run    # create, roll, apply live or nothing",
        ],
        "diff": [
            "sigmactl diff -f web.yaml               # what apply would change: exit 1",
            "sigmactl get apps web -o yaml | sigmactl diff -f -   # exit 0: nothing",
        ],
        "get": [
            "sigmactl get apps                       # every app: replicas, running, ready",
            "sigmactl get instances --app web -o wide",
            "sigmactl get nodes -l idc=hz-a,gpu      # only nodes whose labels match",
            "sigmactl get events --app web --since 10m",
            "sigmactl get pool --group-by idc        # capacity, requested, used per IDC",
            "sigmactl get instances -w               # the list, then what changes",
            "sigmactl get apps web -o json           # the documented schema, for scripts",
        ],
        "describe": [
            "sigmactl describe app web               # spec, instances, revisions, events",
            "sigmactl describe instance web-0        # state, node, IP, ports, restarts",
            "sigmactl describe node node-1",
        ],
        "scale": [
            "sigmactl scale web --replicas 5         # new ordinals get their IPs first",
        ],
        "rollout status": [
            "sigmactl rollout status web             # follow web's rollout until it ends",
            "sigmactl rollout status web --wait-timeout 120",
        ],
        "rollout list": [
            "sigmactl rollout list                   # every app's, newest first",
            "sigmactl rollout list web -o json",
        ],
        "rollout restart": [
            "sigmactl rollout restart web            # new generations, under its strategy",
        ],
        "rollout pause": [
            "sigmactl rollout pause web              # replaces no more instances",
        ],
        "rollout resume": [
            "sigmactl rollout resume web",
        ],
        "rollout promote": [
            "sigmactl rollout promote web            # the canaries look good: the rest",
        ],
        "rollout history": [
            "sigmactl rollout history web            # its revisions",
            "sigmactl rollout history web --revision 3   # one in full, and its diff",
        ],
        "rollout undo": [
            "sigmactl rollout undo web               # back to the revision before",
            "sigmactl rollout undo web --to-revision 2",
        ],
        "set resources": [
            "sigmactl set resources web --request-cpu 500m --limit-memory 1Gi",
            "sigmactl set resources --instance web-2 --limit-cpu 2   # one instance only",
        ],
        "delete": [
            "sigmactl delete app web                 # its instances stop; IPs released",
            "sigmactl delete node node-3             # a drained node leaves the pool",
        ],
        "cordon": [
            "sigmactl cordon node-1                  # nothing new is placed there",
        ],
        "uncordon": [
            "sigmactl uncordon node-1",
        ],
        "drain": [
            "sigmactl drain node-1                   # cordon, then move all (same IPs)",
        ],
        "migrate": [
            "sigmactl migrate web-2                  # wherever placement says, same IP",
            "sigmactl migrate web-2 --to node-4",
        ],
        "restart": [
            "sigmactl restart web-2                  # where it runs: same IP, ports, SSDs",
            "sigmactl restart web-0                  # it ended Failed: placed again",
        ],
        "quota": [
            "sigmactl quota search --cpu 64 --memory 256Gi",
            "sigmactl quota search --cpu 0 --memory 0    # no cap any more",
        ],
        "policy": [
            "sigmactl policy search                  # what the team's apps may",
            "sigmactl policy search --allow-seccomp-unconfined",
        ],
        "logs": [
            "sigmactl logs peers-0                   # the current run's output",
            "sigmactl logs peers-0 --tail 20 -f      # the last 20 lines, then new ones",
            "sigmactl logs peers-0 --since 10m       # what it wrote in the last 10 min",
            "sigmactl logs peers-0 -p                # why the previous run ended",
        ],
        "discover": [
            "sigmactl discover web --ready           # what a client of web would get",
            "sigmactl discover web --wait            # wait for the next change, show it",
        ],
        "config publish": [
            "sigmactl config publish web --file /etc/web.conf=./web.conf -m \"more workers\"",
            "sigmactl config publish web --secret /etc/web/token=./token --gray 0",
        ],
        "config get": [
            "sigmactl config get web                 # the current version (no secrets)",
            "sigmactl config get web --version 3",
        ],
        "config history": [
            "sigmactl config history web",
        ],
        "config diff": [
            "sigmactl config diff web 3 4",
        ],
        "config rollback": [
            "sigmactl config rollback web --to 3     # publishes a copy of version 3",
        ],
        "config gray": [
            "sigmactl config gray web --version 5 --ordinal 0   # web-0 gets it first",
        ],
        "config promote": [
            "sigmactl config promote web             # every instance gets the gray one",
        ],
        "config abandon": [
            "sigmactl config abandon web             # back to the current version",
        ],
        "config delete": [
            "sigmactl config delete web              # after: sigmactl delete app web",
        ],
        "config use-context": [
            "sigmactl config use-context prod        # every call goes to prod from now on",
            "sigmactl --context staging get apps     # one call to another",
        ],
        "config current-context": [
            "sigmactl config current-context",
        ],
        "config get-contexts": [
            "sigmactl config get-contexts",
        ],
        "config set-context": [
            "sigmactl config set-context lab --scheduler 127.0.0.1:7101 --use",
            "sigmactl config set-context prod --scheduler 10.0.0.1:7101,10.0.0.2:7101 \\",
            "    --config 10.0.0.1:7104 --discovery 10.0.0.1:7105 \\",
            "    --server-key keys/prod.pub --client-key keys/me.key",
        ],
        "alloc pools": [
            "sigmactl alloc pools                    # total, used, free, reserved",
        ],
        "alloc create-pool": [
            "sigmactl alloc create-pool overlay 100.64.0.0/16 --gateway 100.64.0.1",
        ],
        "alloc ips": [
            "sigmactl alloc ips --pool overlay",
        ],
        "alloc ports": [
            "sigmactl alloc ports --node node-1",
        ],
        "alloc port-range": [
            "sigmactl alloc port-range node-1 20000 32767 --reserve 22222",
        ],
        "alloc ssds": [
            "sigmactl alloc ssds --node node-1",
        ],
        "alloc release": [
            "sigmactl alloc release 3f2a9c1e-0d4b-4e8a-9a51-2c7d8e6f0b13",
        ],
        "alloc reclaim": [
            "sigmactl alloc reclaim                  # what deleted instances still hold",
        ],
        "health": [
            "sigmactl health                         # every service and every agent",
            "sigmactl health -o json",
        ],
        "metrics": [
            "sigmactl metrics scheduler              # calls and latency per method",
        ],
        "keys generate": [
            "sigmactl keys generate operator --out keys",
        ],
        "access add": [
            "sigmactl access add keys/alice.pub --role operator",
            "sigmactl access add keys/agent-node1.pub --role agent --node node1",
        ],
        "access remove": [
            "sigmactl access remove alice            # refused everywhere within a second",
        ],
        "access list": [
            "sigmactl access list",
        ],
        "audit": [
            "sigmactl audit --caller alice --limit 20",
            "sigmactl audit --method ApplyApp",
        ],
        "version": [
            "sigmactl version                        # sigmactl's and each service's",
            "sigmactl version --client",
        ],
        "top": [
            "sigmactl top nodes                      # used / capacity, requested per node",
            "sigmactl top instances --app web --sort-by memory",
        ],
        "recommend": [
            "sigmactl recommend web                  # a week's p95 and peak, and proposal",
            "sigmactl recommend web --window 24 --headroom 25",
            "sigmactl recommend web --apply          # sets it live, no restart",
        ],
    ]
}
