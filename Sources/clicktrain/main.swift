import ArgumentParser
import ClickTrainCore
import Foundation

// oneDNN runs on OpenMP threads that spin after each primitive; OpenBLAS and our own
// loops then fight them for the cores (2-3x slower). libgomp reads
// OMP_WAIT_POLICY only at load time, so set it and re-execute once.
if ProcessInfo.processInfo.environment["OMP_WAIT_POLICY"] == nil {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1)
    let args = CommandLine.arguments
    var cargs = args.map { strdup($0) } + [nil]
    execv("/proc/self/exe", &cargs)
    // If exec fails we simply continue with the spinning policy.
}

ClickTrainCommand.main()
