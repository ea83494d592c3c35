#!/usr/bin/env python3
"""Checks Sigma's compose deployment where no Docker engine runs.

    check.py --bin DIR [--schema compose-spec.json] [--dockerfile Dockerfile] COMPOSE_FILE

1. The compose file is valid against the Compose Specification's JSON schema (a copy is next to this file).
2. Every service whose command starts with a Sigma executable names one that the build makes (in DIR), and
   every --flag it passes is one that executable's --help lists.
3. The Dockerfile copies only what the repository has and names only executables the build makes.
Prints each problem; exit status 0 when there is none, 1 otherwise.
"""
import argparse
import json
import os
import re
import subprocess
import sys

import jsonschema
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def help_flags(executable, subcommand=None):
    arguments = [executable] + ([subcommand] if subcommand else []) + ["--help"]
    output = subprocess.run(arguments, capture_output=True, text=True, timeout=30)
    return set(FLAG.findall(output.stdout + output.stderr))


def check_compose(path, schema_path, bin_dir):
    problems = []
    with open(path) as f:
        document = yaml.safe_load(f)
    with open(schema_path) as f:
        schema = json.load(f)
    validator = jsonschema.Draft7Validator(schema)
    for error in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        problems.append("%s: %s: %s" % (path, where, error.message))
    services = (document or {}).get("services") or {}
    for name, service in services.items():
        command = (service or {}).get("command")
        if isinstance(command, str):
            command = command.split()
        if not command or not str(command[0]).startswith("sigma"):
            continue
        executable = os.path.join(bin_dir, command[0])
        if not os.access(executable, os.X_OK):
            problems.append("%s: service %s: %s is not an executable the build makes" % (path, name, command[0]))
            continue
        # sigma-agent's default subcommand is `run`; its flags are listed there.
        subcommand = "run" if command[0] == "sigma-agent" else None
        known = help_flags(executable, subcommand)
        for argument in command[1:]:
            flag = str(argument).split("=", 1)[0]
            if flag.startswith("--") and flag not in known:
                problems.append("%s: service %s: %s has no flag %s" % (path, name, command[0], flag))
    return problems


def check_dockerfile(path, bin_dir, root):
    problems = []
    with open(path) as f:
        text = f.read()
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "COPY" and not any(w.startswith("--from") for w in words):
            for source in words[1:-1]:
                if not os.path.exists(os.path.join(root, source)):
                    problems.append("%s: COPY %s: the repository has no %s" % (path, source, source))
    for executable in sorted(set(re.findall(r"\b(sigma-[a-z]+|sigmactl)\b", text))):
        if not os.access(os.path.join(bin_dir, executable), os.X_OK):
            problems.append("%s: names %s, which the build does not make" % (path, executable))
    return problems


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("compose")
    parser.add_argument("--bin", required=True, help="folder of the built executables (swift build --show-bin-path)")
    parser.add_argument("--schema", default=os.path.join(HERE, "compose-spec.json"))
    parser.add_argument("--dockerfile", default=os.path.join(HERE, "Dockerfile"))
    parser.add_argument("--root", default=os.path.dirname(HERE), help="the repository (the build context)")
    args = parser.parse_args()
    problems = check_compose(args.compose, args.schema, args.bin)
    if args.dockerfile:
        problems += check_dockerfile(args.dockerfile, args.bin, args.root)
    for problem in problems:
        print(problem)
    if not problems:
        print("ok: %s is valid and names real executables and flags" % args.compose)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
