import Foundation

/// The repository's root folder (for scripts and fixtures the tests use).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// Whether `python3` with the test-time packages (NumPy, onnxruntime) is there; `.ci/run`
/// installs them, so in CI the checks that need them run (and fail without them).
let pythonChecksRun: Bool = ProcessInfo.processInfo.environment["CI"] != nil
    || runPython(["-c", "import numpy, onnxruntime"]).status == 0

/// `python3 ARGS` (a script path relative to the repository, or `-c CODE`): exit status and
/// everything it printed.
@discardableResult
func runPython(_ args: [String]) -> (status: Int32, output: String) {
    let p = Process(), out = Pipe()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3"] + args.enumerated().map { i, a in
        i == 0 && a.hasPrefix("scripts/") ? repositoryRoot.appendingPathComponent(a).path : a
    }
    p.standardOutput = out
    p.standardError = out
    guard (try? p.run()) != nil else { return (-1, "python3 could not start") }
    let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    return (p.terminationStatus, text)
}
