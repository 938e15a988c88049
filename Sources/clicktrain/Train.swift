import ArgumentParser
import ClickTrainCore
import ClickTrainData
import ClickTrainDistributed
import ClickTrainNN
import ClickTrainTraining
import Foundation

struct Train: ParsableCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(
            abstract: "Train a model; writes a run folder with config.yaml, metrics.jsonl, model.safetensors and a checkpoint.",
            discussion: """
                Defaults train ResNet-20 on Fashion-MNIST from /usr/share/datasets/fashion-mnist (Debian package \
                dataset-fashion-mnist) for 12 epochs with a cosine schedule. Options given on the command line \
                override those of --config, whose keys are those of config.yaml. A run stopped for any reason \
                continues with --resume RUN_DIR.

                TRAINING OPTIONS (YAML keys in config.yaml):
                \(RunConfig.commandLineHelp)
                """)
    }

    @Option(help: "Run folder to write. [default: runs/<model>-<dataset>-<date>]") var out: String?
    @Option(help: "YAML configuration file (keys as in config.yaml).") var config: String?
    @Option(help: "Continue the run in this folder from its last checkpoint (other options are ignored).")
    var resume: String?
    @Option(help: deviceHelp) var device: DeviceKind = .cpu
    @Argument(parsing: .allUnrecognized, help: ArgumentHelp("Training options, listed above.", visibility: .hidden))
    var settings: [String] = []

    func run() throws {
        let group: MPIProcessGroup?
        do { group = try MPIProcessGroup.joinIfLaunched() } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(1)
        }
        do {
            try reportingErrors { try train(group: group) }
        } catch let e as ExitCode where e.rawValue != 0 {
            if let group, group.size > 1 { group.abort(code: e.rawValue) }  // one rank failing ends the job
            group?.finish()
            throw e
        }
        group?.finish()
    }

    func train(group: MPIProcessGroup?) throws {
        if let g = group, g.size > 1 { errorPrefix = "rank \(g.rank) of \(g.size): " }
        do {
            if device == .cuda, let g = group, g.size > 1 {
                throw FlagError(description: "--device cuda trains in one process; start it without mpirun")
            }
            let gpu = try openDevice(device)
            if let dir = resume {
                let trainer = try Trainer.resume(runDir: dir, group: group)
                if let gpu { try trainer.use(device: engine(on: gpu, for: trainer)) }
                try watched(trainer).run()
                return
            }
            var cfg = try config.map { try RunConfig.load(yamlFile: $0) } ?? RunConfig()
            if let path = config, let text = try? String(contentsOfFile: path, encoding: .utf8) {
                let unused = RunConfig.unusedKeys(yaml: text)
                if !unused.isEmpty, (group?.rank ?? 0) == 0 {
                    FileHandle.standardError.write(Data("""
                        warning: \(path): ignoring keys clicktrain does not use: \(unused.joined(separator: ", ")) \
                        (see `clicktrain train --help` and the config.yaml of any run for the keys it reads)

                        """.utf8))
                }
            }
            let fileEpochs = cfg.epochs
            let given = try cfg.applyCommandLine(settings)
            cfg.rescaleSchedule(from: fileEpochs, except: given)  // a published file's schedule follows --epochs
            try cfg.validate(source: config ?? "command line")
            if group == nil, cfg.sync_bn {
                throw FlagError(description: "--sync-bn synchronises batch norm across the ranks of an MPI job; start the run with mpirun -np N")
            }
            if gpu != nil, cfg.method == .prunetrain || cfg.grad_prune > 0 {
                throw FlagError(description: "--device cuda runs dense, clicktrain and pat: PruneTrain and --grad-prune need --device cpu for now")
            }
            var dir = out ?? defaultRunDir(cfg)
            if let group, group.size > 1 { dir = group.broadcast(dir) }  // rank 0's date in the name
            let trainer = try Trainer(config: cfg, runDir: dir, group: group,
                                      device: gpu.map { g in { try engine(on: g, for: $0) } })
            try watched(trainer).run()
        }
    }

    /// `trainer` with SIGINT/SIGTERM saying which checkpoint survives and how to resume;
    /// under `mpirun` rank 0 alone speaks (the others end with the job).
    func watched(_ trainer: Trainer) -> Trainer {
        guard trainer.writesFiles else {
            trainer.log = { _ in }
            trainer.showProgressBar = false
            return trainer
        }
        let ranks = trainer.group?.size ?? 1
        let launcher = ranks > 1 ? "mpirun -np \(ranks) " : ""
        let dir = trainer.runDir, path = trainer.checkpointPath
        describeInterrupt(runDir: dir, checkpointPath: path, checkpointedEpochs: trainer.completedEpochs, launcher: launcher)
        trainer.onCheckpoint = { describeInterrupt(runDir: dir, checkpointPath: path, checkpointedEpochs: $0, launcher: launcher) }
        installInterruptHandlers()
        return trainer
    }

    func defaultRunDir(_ cfg: RunConfig) -> String {
        let f = DateFormatter()
        f.dateFormat = "yyyyMMdd-HHmmss"
        return "runs/\(ModelZoo.canonicalName(cfg.model))-\(cfg.dataset.rawValue)-\(f.string(from: Date()))"
    }
}

/// Put before every error line (e.g. "rank 1 of 2: ").
nonisolated(unsafe) var errorPrefix = ""

/// Prints any error as one line on stderr and exits 1 (never a crash trace).
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as ValidationError {
        throw e
    } catch let e as ExitCode {
        throw e
    } catch {
        FileHandle.standardError.write(Data("\(errorPrefix)error: \(error)\n".utf8))
        throw ExitCode(1)
    }
}

/// `value` as one line of JSON with sorted keys.
func printJSON<T: Encodable>(_ value: T) throws {
    let enc = JSONEncoder()
    enc.outputFormatting = [.sortedKeys]
    print(String(decoding: try enc.encode(value), as: UTF8.self))
}

/// A flag value outside its range: one line naming the flag and what it accepts.
struct FlagError: Error, CustomStringConvertible {
    let description: String
}

func requireFlag(_ ok: Bool, _ message: @autoclosure () -> String) throws {
    if !ok { throw FlagError(description: message()) }
}
