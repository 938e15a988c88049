import ClickTrainCore
import ClickTrainTestSupport
import ClickTrainTraining
import Foundation
import Testing

/// The real binary, run as a user would: exit status and what it printed.
struct CommandResult {
    var status: Int32
    var reason: Process.TerminationReason
    var stdout: String
    var stderr: String
}

/// With `mpiRanks`, started as `mpirun -np N clicktrain ARGS` (as root too).
func runClicktrain(_ args: [String], shell prefix: String? = nil, mpiRanks: Int? = nil,
                   until: ((Process) -> Void)? = nil) throws -> CommandResult {
    let exe = try #require(clicktrainExecutable(), "build the clicktrain executable first (swift build)")
    let p = Process()
    let out = Pipe(), err = Pipe()
    if let ranks = mpiRanks {
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["mpirun", "--oversubscribe", "-np", String(ranks), exe] + args
        var env = ProcessInfo.processInfo.environment
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        p.environment = env
    } else if let prefix {
        // e.g. "trap '' XFSZ; ulimit -f 100;" before exec-ing the binary.
        p.executableURL = URL(fileURLWithPath: "/bin/bash")
        p.arguments = ["-c", prefix + " exec \"$0\" \"$@\"", exe] + args
    } else {
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
    }
    p.standardOutput = out
    p.standardError = err
    try p.run()
    until?(p)
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return CommandResult(status: p.terminationStatus, reason: p.terminationReason,
                         stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
}

/// Waits until `path` exists (or `p` ended, or a minute passed).
func waitFor(_ path: String, while p: Process) {
    let deadline = Date().addingTimeInterval(60)
    while !FileManager.default.fileExists(atPath: path) && Date() < deadline && p.isRunning { usleep(20_000) }
}

@Suite("Bad input, a full disk, one run per folder, signals", .serialized)
struct HardeningTests {
    /// Every bad flag value: exit 1 and one line naming the flag, never a crash.
    @Test func badFlagValuesAreOneLineErrors() throws {
        let (cfg, dir) = tinyRun(epochs: 1)
        let cases: [([String], String)] = [
            (["bench", "--threads", "0"], "--threads"), (["bench", "--runs", "0"], "--runs"),
            (["bench", "--batch", "0"], "--batch"), (["bench", "--classes", "0"], "--classes"),
            (["bench", "--warmup=-1"], "--warmup"), (["bench", "--compression", "0.5", "--sparse"], "--compression"),
            (["bench", "--model", "lenet5", "--input", "1x4x4"], "12x12"), (["bench", "--input", "3x32"], "--input"),
            (["bench", "--grad-prune", "1.5"], "--grad-prune"),
            (["eval", dir + "/none.safetensors", "--batch-size", "0"], "--batch-size"),
            (["train", "--data", cfg.data, "--epochs", "0"], "--epochs"),
            (["train", "--data", cfg.data, "--lr", "nan"], "--lr"),
            (["train", "--data", cfg.data, "--momentum", "1"], "--momentum"),
            (["train", "--data", cfg.data, "--threads", "0"], "--threads"),
            (["train", "--data", cfg.data, "--method", "clicktrain", "--choose-epoch", "3", "--hard-prune-epoch", "2"],
             "--choose-epoch"),
            (["train", "--data", cfg.data, "--method", "magic"], "--method"),
            (["train", "--data", cfg.data, "--num-patterns", "0"], "--num-patterns"),
            (["train", "--data", cfg.data, "--crop-padding", "-1"], "--crop-padding"),
            (["train", "--data", cfg.data, "--epochs"], "--epochs"),
            (["train", "--data", cfg.data, "--batch-size", "100000"], "batch_size"),
        ]
        for (args, needle) in cases {
            let r = try runClicktrain(args + ["--out", SyntheticData.temporaryDirectory("bad")].filter { _ in args[0] == "train" })
            #expect(r.status == 1 && r.reason == .exit, "\(args): status \(r.status)")
            let lines = r.stderr.split(separator: "\n")
            #expect(lines.count == 1 && r.stderr.contains(needle), "\(args): \(r.stderr)")
        }
    }

    /// `--device cuda` on a machine without the NVIDIA driver: one line naming the library,
    /// exit 1, and no run folder; `--device` takes cpu or cuda only.
    @Test(.enabled(if: dlopen("libcuda.so.1", RTLD_NOW) == nil, "this machine has the NVIDIA driver"))
    func cudaWithoutADriverIsOneLineError() throws {
        let (cfg, dir) = tinyRun(epochs: 1)
        let out = dir + "/gpu-run"
        for args in [["train", "--data", cfg.data, "--out", out, "--device", "cuda"],
                     ["eval", dir + "/none.safetensors", "--device", "cuda"], ["bench", "--device", "cuda"]] {
            let r = try runClicktrain(args)
            #expect(r.status == 1 && r.reason == .exit, "\(args): status \(r.status)")
            #expect(r.stderr.split(separator: "\n").count == 1 && r.stderr.contains("libcuda.so.1"), "\(args): \(r.stderr)")
        }
        #expect(!FileManager.default.fileExists(atPath: out))
        let bad = try runClicktrain(["bench", "--device", "tpu"])
        #expect(bad.status != 0 && bad.stderr.contains("--device"), "\(bad.stderr)")
    }

    @Test func configFileValuesAreChecked() throws {
        let (cfg, _) = tinyRun(epochs: 1)
        for (yaml, needle) in [("method: clicktrain\nprune_ratios:\n  layer1.0.conv1.weight: 120\n", "prune_ratios"),
                               ("method: clicktrain\nprune_ratios:\n  layer9.0.conv1.weight: 50\n", "layer9"),
                               ("gamma: -1\n", "gamma"), ("epochs: [1, 2]\n", "epochs")] {
            let path = SyntheticData.temporaryDirectory("cfg") + ".yaml"
            try (yaml + "model: resnet20\nepochs: 1\ndata: \(cfg.data)\n").write(toFile: path, atomically: true, encoding: .utf8)
            let r = try runClicktrain(["train", "--config", path, "--out", SyntheticData.temporaryDirectory("run")])
            #expect(r.status == 1 && r.stderr.split(separator: "\n").count == 1 && r.stderr.contains(needle),
                    "\(yaml): \(r.stderr)")
        }
    }

    /// A checkpoint that cannot be written (file-size limit, as a full disk) stops the run
    /// with one line, leaves the previous checkpoint byte for byte, and the run resumes
    /// once writing works again.
    @Test func fullDiskKeepsTheLastCheckpoint() throws {
        let (cfg, dir) = tinyRun(epochs: 3, model: "resnet20")
        let common = ["--data", cfg.data, "--model", "resnet20", "--batch-size", "32", "--threads", "2", "--seed", "5",
                      "--max-steps-per-epoch", "2", "--out", dir]
        // A finished run gives the checkpoint's size.
        _ = try runClicktrain(["train", "--epochs", "3"] + common)
        let ck = dir + "/checkpoint/state.safetensors"
        let size = try #require(try FileManager.default.attributesOfItem(atPath: ck)[.size] as? Int)
        let dir2 = SyntheticData.temporaryDirectory("run")
        let args2 = ["train", "--epochs", "3"] + common.dropLast() + [dir2]
        // The limit in 1 KiB blocks: room for every file but a checkpoint.
        let r = try runClicktrain(args2, shell: "trap '' XFSZ; ulimit -f \(size / 1024 - 8);")
        #expect(r.status == 1 && r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        #expect(r.stderr.contains("epoch 1 could not be saved") && r.stderr.contains("start the run again"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir2 + "/checkpoint/state.safetensors"))
        // Now from a saved epoch: run epoch 1 with room, then fail on epoch 2.
        let dir3 = SyntheticData.temporaryDirectory("run")
        let args3 = ["train", "--epochs", "3"] + common.dropLast() + [dir3]
        let ck3 = dir3 + "/checkpoint/state.safetensors"
        _ = try runClicktrain(args3) { p in
            waitFor(ck3, while: p)
            kill(p.processIdentifier, SIGKILL)
        }
        let saved = try Data(contentsOf: URL(fileURLWithPath: ck3))
        let failed = try runClicktrain(["train", "--resume", dir3], shell: "trap '' XFSZ; ulimit -f \(size / 1024 - 8);")
        #expect(failed.status == 1 && failed.stderr.contains("is intact"), "\(failed.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: ck3)) == saved)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir3 + "/checkpoint").filter { $0.contains("tmp") }
        #expect(leftovers.isEmpty, "temporary files left: \(leftovers)")
        let resumed = try runClicktrain(["train", "--resume", dir3])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let metrics = try String(contentsOfFile: dir3 + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(metrics.count == 3)
    }

    /// A second `train` on a folder whose run is going is refused; the lock does not
    /// outlive a killed process.
    @Test func oneRunPerFolder() throws {
        let (cfg, dir) = tinyRun(epochs: 50, model: "resnet20")
        var second: CommandResult?, resumeWhileRunning: CommandResult?
        let first = try runClicktrain(["train", "--data", cfg.data, "--model", "resnet20", "--epochs", "50",
                                       "--batch-size", "32", "--threads", "2", "--out", dir]) { p in
            waitFor(dir + "/config.yaml", while: p)
            second = try? runClicktrain(["train", "--data", cfg.data, "--epochs", "1", "--out", dir])
            waitFor(dir + "/checkpoint/state.safetensors", while: p)
            resumeWhileRunning = try? runClicktrain(["train", "--resume", dir])
            kill(p.processIdentifier, SIGKILL)
        }
        #expect(first.reason == .uncaughtSignal)
        let s = try #require(second), r = try #require(resumeWhileRunning)
        #expect(s.status == 1 && s.stderr.contains("in use"), "\(s.stderr)")
        #expect(r.status == 1 && r.stderr.contains("in use"), "\(r.stderr)")
        // Killed: the lock went with the process, and a finished run is still refused without --resume.
        // A write cut short by the kill leaves its temporary file: the next holder removes it.
        let leftover = dir + "/checkpoint/.state.safetensors.tmp-99999"
        #expect(FileManager.default.createFile(atPath: leftover, contents: Data(count: 16)))
        #expect(try Trainer.resume(runDir: dir).completedEpochs >= 1)
        #expect(!FileManager.default.fileExists(atPath: leftover))
        #expect { try Trainer(config: cfg, runDir: dir) } throws: { "\($0)".contains("--resume") }
    }

    /// SIGINT and SIGTERM: the run ends at once, says which checkpoint is intact and how to
    /// resume, and the resumed run finishes.
    @Test(arguments: [SIGINT, SIGTERM])
    func signalsSayHowToResume(_ sig: Int32) throws {
        let (cfg, dir) = tinyRun(epochs: 30, model: "resnet20")
        let r = try runClicktrain(["train", "--data", cfg.data, "--model", "resnet20", "--epochs", "30", "--batch-size", "32",
                                   "--threads", "2", "--max-steps-per-epoch", "4", "--out", dir]) { p in
            waitFor(dir + "/checkpoint/state.safetensors", while: p)
            kill(p.processIdentifier, sig)
        }
        #expect(r.reason == .uncaughtSignal && r.status == sig, "status \(r.status), \(r.reason)")
        #expect(r.stderr.contains("is intact") && r.stderr.contains("clicktrain train --resume \(dir)"), "\(r.stderr)")
        let epochs = try Trainer.resume(runDir: dir).completedEpochs
        #expect(epochs >= 1 && epochs < 30)
    }
}
