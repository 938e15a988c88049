import Foundation

// What SIGINT and SIGTERM print before the process ends: set from the training loop after
// every checkpoint, read by the handler (which may only call async-signal-safe functions,
// hence a C string prepared in advance).
nonisolated(unsafe) private var interruptMessage: UnsafeMutablePointer<CChar>?

/// The line a signal prints; the previous string is kept alive, since a handler running at
/// this moment may still be reading it.
func setInterruptMessage(_ text: String) {
    interruptMessage = strdup(text)
}

/// SIGINT and SIGTERM end the process at once with the prepared message, then by the
/// signal itself (so a calling shell sees it). Checkpoints are written atomically, so the
/// last finished epoch's checkpoint is whole whatever moment the signal comes.
func installInterruptHandlers() {
    // A parent may have started us with these signals blocked; they are ours to take now.
    var set = sigset_t()
    sigemptyset(&set)
    sigaddset(&set, SIGINT)
    sigaddset(&set, SIGTERM)
    pthread_sigmask(SIG_UNBLOCK, &set, nil)
    for sig in [SIGINT, SIGTERM] {
        signal(sig) { s in
            if let m = interruptMessage { _ = write(2, m, strlen(m)) }
            // Again, by default and unblocked (a handler runs with its signal blocked).
            signal(s, SIG_DFL)
            var own = sigset_t()
            sigemptyset(&own)
            sigaddset(&own, s)
            pthread_sigmask(SIG_UNBLOCK, &own, nil)
            raise(s)
            _exit(128 + s)
        }
    }
}

/// Keeps the interrupt message of a run in `runDir` up to date: `epochs` finished ones;
/// `launcher` starts the resume command (e.g. "mpirun -np 2 ").
func describeInterrupt(runDir: String, checkpointedEpochs epochs: Int, launcher: String = "") {
    setInterruptMessage(epochs > 0
        ? "\ninterrupted: the checkpoint of epoch \(epochs) in \(runDir) is intact; continue with: \(launcher)clicktrain train --resume \(runDir)\n"
        : "\ninterrupted before the first epoch ended: nothing was saved in \(runDir); start the run again\n")
}
