import ClickTrainCore
import ClickTrainData
import ClickTrainTestSupport
import ClickTrainTraining
import Foundation
import Testing

/// Whether Open MPI's launcher is there; `.ci/run` installs it, so in CI these tests run
/// (and fail without it).
let mpiTestsRun: Bool = ProcessInfo.processInfo.environment["CI"] != nil
    || FileManager.default.isExecutableFile(atPath: "/usr/bin/mpirun")

/// `mpirun -np RANKS clicktrain ARGS` as a user would start it.
func runMPI(ranks: Int, _ args: [String], until: ((Process) -> Void)? = nil) throws -> CommandResult {
    try runClicktrain(args, mpiRanks: ranks, until: until)
}

/// The float tensors of a safetensors file by name.
func floatTensors(_ path: String) throws -> [String: [Float]] {
    var out: [String: [Float]] = [:]
    for (name, value) in try SafeTensors.read(path).tensors {
        if case .f32(_, let v) = value { out[name] = v }
    }
    return out
}

@Suite("Data parallelism over MPI", .serialized, .enabled(if: mpiTestsRun))
struct DistributedTests {
    /// Command-line words of `tinyRun` on ResNet-20 for `steps` steps at a constant rate.
    func resnetArgs(_ cfg: RunConfig, out: String, steps: Int, lr: String) -> [String] {
        ["train", "--data", cfg.data, "--model", "resnet20", "--epochs", "1", "--max-steps-per-epoch", String(steps),
         "--batch-size", "32", "--lr", lr, "--lr-schedule", "constant", "--crop-padding", "0", "--seed", "5",
         "--out", out]
    }

    /// Two ranks with synchronised batch norm follow one process on the whole batch: after
    /// three steps every weight differs from the one-process run by under 1% of how
    /// far training moved it (float rounding, which the steps amplify), while local batch
    /// norm (each rank's half-batch statistics) lands far off.
    @Test func syncBatchNormFollowsOneProcess() throws {
        let (cfg, _) = tinyRun(epochs: 1)
        let runs = (0..<4).map { _ in SyntheticData.temporaryDirectory("run") }
        let start = try runClicktrain(resnetArgs(cfg, out: runs[0], steps: 1, lr: "1e-30"))
        let single = try runClicktrain(resnetArgs(cfg, out: runs[1], steps: 3, lr: "0.05"))
        let synced = try runMPI(ranks: 2, resnetArgs(cfg, out: runs[2], steps: 3, lr: "0.05") + ["--sync-bn"])
        let local = try runMPI(ranks: 2, resnetArgs(cfg, out: runs[3], steps: 3, lr: "0.05"))
        for r in [start, single, synced, local] { #expect(r.status == 0, "\(r.stderr)") }
        let w0 = try floatTensors(runs[0] + "/model.safetensors")
        let w1 = try floatTensors(runs[1] + "/model.safetensors")
        func largestDifference(_ run: String) throws -> (difference: Float, update: Float) {
            var d: Float = 0, u: Float = 0
            for (name, values) in try floatTensors(run + "/model.safetensors")
            where !name.contains("running") && !name.contains("num_batches") {
                let one = try #require(w1[name]), initial = try #require(w0[name])
                for i in values.indices {
                    d = max(d, abs(values[i] - one[i]))
                    u = max(u, abs(one[i] - initial[i]))
                }
            }
            return (d, u)
        }
        let s = try largestDifference(runs[2]), l = try largestDifference(runs[3])
        #expect(s.update > 1e-3)
        #expect(s.difference <= 0.01 * s.update, "synchronised: \(s)")
        #expect(l.difference >= 0.2 * l.update, "local batch norm should differ: \(l)")
        let line = try String(contentsOfFile: runs[2] + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")[0]
        let m = try JSONDecoder().decode(EpochMetrics.self, from: Data(line.utf8))
        #expect(m.ranks == 2 && (m.allreduce_bytes_per_step ?? 0) > 0 && m.comm_seconds != nil)
    }

    /// ClickTrain on two ranks: pattern choice and hard pruning inside the run, every rank
    /// ending each epoch with the same weights, masks and pruning state (the run checks a
    /// hash every epoch and stops if not), and after hard pruning only the kept weights'
    /// gradients travel.
    @Test func clickTrainAgreesAcrossRanksAndExchangesLess() throws {
        let (cfg, dir) = tinyRun(epochs: 1)
        let r = try runMPI(ranks: 2, ["train", "--data", cfg.data, "--model", "resnet20", "--method", "clicktrain",
                                      "--epochs", "4", "--choose-epoch", "2", "--hard-prune-epoch", "3",
                                      "--max-steps-per-epoch", "3", "--batch-size", "32", "--out", dir])
        #expect(r.status == 0, "\(r.stderr)")
        let metrics = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try JSONDecoder().decode(EpochMetrics.self, from: Data($0.utf8)) }
        #expect(metrics.count == 4)
        let dense = try #require(metrics.first?.allreduce_bytes_per_step)
        let pruned = try #require(metrics.last?.allreduce_bytes_per_step)
        #expect(metrics.last?.phase == "pruned" && (metrics.last?.conv_compression ?? 0) > 7.9)
        #expect(pruned * 5 <= dense, "dense \(dense) bytes per step, pruned \(pruned)")
        #expect(FileManager.default.fileExists(atPath: dir + "/model.pattern.safetensors"))
    }

    /// PruneTrain on two ranks: λ (set from the first step's loss, the whole batch's on every
    /// rank) and the rebuilt, smaller network agree across the ranks; so does gradient pruning.
    @Test func pruneTrainAndGradientPruningAgreeAcrossRanks() throws {
        let (cfg, dir) = tinyRun(epochs: 1)
        let r = try runMPI(ranks: 2, ["train", "--data", cfg.data, "--model", "resnet20", "--method", "prunetrain",
                                      "--prunetrain-interval", "1", "--prunetrain-share", "0.9", "--grad-prune", "0.5",
                                      "--epochs", "3", "--max-steps-per-epoch", "3", "--batch-size", "32", "--out", dir])
        #expect(r.status == 0, "\(r.stderr)")
        let ck = try SafeTensors.read(dir + "/checkpoint/state.safetensors")
        #expect(ck.metadata["epoch"] == "3" && ck.metadata["prunetrain"] != nil)
    }

    /// Ranks holding different models stop the run before it saves, naming the ranks.
    @Test func differingRanksStopTheRun() throws {
        var (cfg, dir) = tinyRun(epochs: 1)
        cfg.max_steps_per_epoch = 1
        let t = quiet(try Trainer(config: cfg, runDir: dir, group: DisagreeingGroup()))
        #expect(throws: TrainingError.self) { try t.checkRanksAgree() }
        do { try t.checkRanksAgree() } catch {
            #expect("\(error)".contains("rank 1 holds other weights"), "\(error)")
        }
    }

    /// A killed rank ends the whole job within seconds with a non-zero exit that names
    /// it; the last checkpoint stays intact and the run resumes under mpirun.
    @Test func killedRankEndsTheJobAndTheRunResumes() throws {
        let data = SyntheticData.temporaryDirectory("data")
        SyntheticData.writeIDXFolder(data, train: 4096, test: 128, size: 16) { try! IDX.write($0, dims: $1, bytes: $2) }
        let dir = SyntheticData.temporaryDirectory("run")
        let args = ["train", "--data", data, "--model", "resnet20", "--epochs", "3", "--batch-size", "32",
                    "--crop-padding", "0", "--out", dir]
        var killedAt: Date?
        let r = try runMPI(ranks: 2, args) { p in
            waitFor(dir + "/checkpoint/state.safetensors", while: p)
            usleep(300_000)  // into the second epoch
            if let pid = rankProcess(1, runDir: dir) {
                kill(pid, SIGKILL)
                killedAt = Date()
            }
        }
        let ended = Date()
        let killed = try #require(killedAt, "rank 1's process was not found")
        #expect(r.status != 0)
        #expect(ended.timeIntervalSince(killed) < 15, "the job took \(ended.timeIntervalSince(killed)) s to end")
        #expect((r.stdout + r.stderr).contains("rank 1"), "\(r.stderr)")
        let saved = try SafeTensors.read(dir + "/checkpoint/state.safetensors")
        #expect(saved.metadata["epoch"] == "1" && saved.metadata["ranks"] == "2")
        let resumed = try runMPI(ranks: 2, ["train", "--resume", dir])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let epochs = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").count
        #expect(epochs == 3)
    }

    /// A stop signal (as mpirun passes Ctrl-C on to the ranks): rank 0 says which checkpoint
    /// is intact and how to resume under mpirun, and the job ends. (The signal goes to rank 0
    /// itself: a process the test runner starts inherits its blocked signals, and mpirun
    /// leaves them blocked.)
    @Test func interruptNamesTheMPIResumeCommand() throws {
        let (cfg, dir) = tinyRun(epochs: 1)
        let r = try runMPI(ranks: 2, ["train", "--data", cfg.data, "--model", "lenet5", "--epochs", "500",
                                      "--batch-size", "32", "--out", dir]) { p in
            waitFor(dir + "/checkpoint/state.safetensors", while: p)
            if let pid = rankProcess(0, runDir: dir) { kill(pid, SIGTERM) }
        }
        #expect(r.status != 0)
        #expect(r.stderr.contains("is intact; continue with: mpirun -np 2 clicktrain train --resume \(dir)"), "\(r.stderr)")
    }

    /// A global batch that does not split evenly over the ranks, and --sync-bn without
    /// mpirun: one line each, exit 1.
    @Test func badDistributedSettingsAreOneLineErrors() throws {
        let (cfg, dir) = tinyRun(epochs: 1)
        let odd = try runMPI(ranks: 2, ["train", "--data", cfg.data, "--model", "lenet5", "--batch-size", "33",
                                        "--out", dir])
        #expect(odd.status != 0 && odd.stderr.contains("does not split evenly over 2 ranks"), "\(odd.stderr)")
        let sync = try runClicktrain(["train", "--data", cfg.data, "--sync-bn", "--out", dir])
        #expect(sync.status == 1 && sync.stderr.contains("--sync-bn") && sync.stderr.contains("mpirun"), "\(sync.stderr)")
    }
}

/// The process of `rank` of the mpirun job training into `runDir`.
func rankProcess(_ rank: Int, runDir: String) -> pid_t? {
    for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
        guard let pid = Int32(name),
              let cmd = FileManager.default.contents(atPath: "/proc/\(name)/cmdline"),
              String(decoding: cmd, as: UTF8.self).contains(runDir),
              let env = FileManager.default.contents(atPath: "/proc/\(name)/environ") else { continue }
        if env.split(separator: 0).contains(where: { String(decoding: $0, as: UTF8.self) == "OMPI_COMM_WORLD_RANK=\(rank)" }) {
            return pid
        }
    }
    return nil
}

/// Two "ranks" in one process whose hashes always differ (rank 1 holds another model).
final class DisagreeingGroup: ProcessGroup {
    let rank = 0, size = 2, localSize = 2
    let allreduceBytes = 0, waitSeconds = 0.0
    func allreduceSum(_ values: UnsafeMutableBufferPointer<Float>) { for i in values.indices { values[i] *= 2 } }
    func allreduceSum(_ values: UnsafeMutableBufferPointer<Double>) { for i in values.indices { values[i] *= 2 } }
    func startAllreduceSum(_ values: UnsafeMutableBufferPointer<Float>) { allreduceSum(values) }
    func progress() {}
    func waitAll() {}
    func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) {}
    func allgather(_ value: UInt64) -> [UInt64] { [value, value &+ 1] }
}
