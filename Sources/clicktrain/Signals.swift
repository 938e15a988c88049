import Foundation

/// What SIGINT and SIGTERM print: prepared by the training loop after every checkpoint,
/// read by the handler (which may only call async-signal-safe functions, hence C strings
/// prepared in advance). The next epoch's checkpoint replaces the file by a rename before
/// the loop can update this, so the handler tells the two apart by the file's identity:
/// while `path` is still the file that was there when `current` was prepared (or still
/// absent), `current` holds; once it is another file, the next epoch's checkpoint landed.
private struct InterruptState {
    var path: UnsafeMutablePointer<CChar>
    var current: UnsafeMutablePointer<CChar>
    var next: UnsafeMutablePointer<CChar>
    var device: UInt64
    var inode: UInt64
    var existed: Bool
}

// One pointer, swapped whole; earlier states are kept alive, since a handler running at
// this moment may still be reading one.
nonisolated(unsafe) private var interruptState: UnsafeMutablePointer<InterruptState>?

/// The line for a run in `runDir` with `epochs` finished ones; `launcher` starts the resume
/// command (e.g. "mpirun -np 2 ").
func interruptLine(runDir: String, checkpointedEpochs epochs: Int, launcher: String = "") -> String {
    epochs > 0
        ? "\ninterrupted: the checkpoint of epoch \(epochs) in \(runDir) is intact; continue with: \(launcher)clicktrain train --resume \(runDir)\n"
        : "\ninterrupted before the first epoch ended: nothing was saved in \(runDir); start the run again\n"
}

/// Keeps the interrupt message of a run up to date: `epochs` finished ones whose checkpoint
/// is now at `checkpointPath`.
func describeInterrupt(runDir: String, checkpointPath: String, checkpointedEpochs epochs: Int, launcher: String = "") {
    var st = stat()
    let existed = stat(checkpointPath, &st) == 0
    let state = UnsafeMutablePointer<InterruptState>.allocate(capacity: 1)
    state.initialize(to: InterruptState(
        path: strdup(checkpointPath),
        current: strdup(interruptLine(runDir: runDir, checkpointedEpochs: epochs, launcher: launcher)),
        next: strdup(interruptLine(runDir: runDir, checkpointedEpochs: epochs + 1, launcher: launcher)),
        device: existed ? UInt64(st.st_dev) : 0, inode: existed ? UInt64(st.st_ino) : 0, existed: existed))
    interruptState = state
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
            if let state = interruptState {
                var st = stat()
                let exists = stat(state.pointee.path, &st) == 0
                // Landed: a checkpoint is there, and not the one the message was prepared for.
                let landed = exists && (!state.pointee.existed || UInt64(st.st_dev) != state.pointee.device
                                        || UInt64(st.st_ino) != state.pointee.inode)
                let m = landed ? state.pointee.next : state.pointee.current
                _ = write(2, m, strlen(m))
            }
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
