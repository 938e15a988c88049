import ClickTrainCore
import ClickTrainNN
import Foundation

extension Trainer {
    /// Continues the run in `runDir` from its last checkpoint (with a `group`, every rank
    /// reads it: the run folder must be on a file system all ranks see). A run of your own
    /// model needs a new instance of the same architecture as `model`; the checkpoint's
    /// weights are loaded into it.
    public static func resume(runDir: String, model custom: (any Layer)? = nil,
                              group: (any ProcessGroup)? = nil) throws -> Trainer {
        let path = runDir + "/checkpoint/state.safetensors"
        guard FileManager.default.fileExists(atPath: path) else { throw TrainingError.noCheckpoint(runDir: runDir) }
        let ck = try SafeTensors.read(path)
        guard let yaml = ck.metadata["config"], let epochText = ck.metadata["epoch"], let epoch = Int(epochText) else {
            throw TrainingError.badCheckpoint(path: path, detail: "metadata lacks 'config' or 'epoch'")
        }
        let cfg: RunConfig
        do { cfg = try RunConfig.decode(yaml: yaml, source: path, customModel: custom != nil) } catch {
            throw TrainingError.badCheckpoint(path: path, detail: "its config does not parse: \(error)")
        }
        guard (0...cfg.epochs).contains(epoch) else {
            throw TrainingError.badCheckpoint(path: path, detail: "epoch \(epoch) is outside the run's 0…\(cfg.epochs)")
        }
        let t = try Trainer(validated: cfg, runDir: runDir, group: group, model: custom)
        if t.writesFiles {
            t.lock = try RunLock(runDir: runDir)
            RunLock.removeLeftovers(in: runDir)
        }
        let ranks = Int(ck.metadata["ranks"] ?? "1") ?? 1
        if ranks != group?.size ?? 1 {
            t.startNotes.append("this run trained on \(ranks) rank\(ranks == 1 ? "" : "s") so far and continues on \(group?.size ?? 1); its batches split differently from here on")
        }
        // The methods' own state first: it may reshape the model the weights are loaded into.
        var own = MethodCheckpoint(metadata: ck.metadata)
        for (name, value) in ck.tensors where !name.hasPrefix("model.") && !name.hasPrefix("optimizer.") {
            if case .f32(let shape, let values) = value { own.tensors.append((name, Tensor(shape: shape, values: values))) }
        }
        for method in t.methods {
            do {
                if let change = try method.restore(from: own) { t.modelChanged(change) }
            } catch {
                throw TrainingError.badCheckpoint(path: path, detail: "\(error)")
            }
        }
        try ModelState.load(ck.tensors, into: t.model, prefix: "model.", path: path, allowExtra: true)
        for (p, buf) in zip(t.optimizer.parameters, t.optimizer.momentumBuffers) {
            let key = "optimizer.momentum_buffer." + p.name
            guard case .f32(let shape, let vals)? = ck.tensors[key], shape == buf.shape else {
                throw TrainingError.badCheckpoint(path: path, detail: "momentum buffer '\(key)' is missing or has the wrong shape")
            }
            vals.withUnsafeBufferPointer { buf.data.update(from: $0.baseAddress!, count: buf.count) }
        }
        t.completedEpochs = epoch
        t.elapsedBefore = Double(ck.metadata["elapsed_seconds"] ?? "0") ?? 0
        // Keep the metrics of the epochs the checkpoint covers (a killed run may have
        // written one more line than it checkpointed).
        let kept = t.readMetrics().filter { $0.epoch <= epoch }
        guard t.writesFiles else { return t }
        try atomicWrite(Data(kept.map { jsonLine($0) + "\n" }.joined().utf8), to: t.metricsPath)
        return t
    }

    func appendMetrics(_ m: EpochMetrics) throws {
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: metricsPath))
        defer { try? h.close() }
        try h.seekToEnd()
        try h.write(contentsOf: Data((jsonLine(m) + "\n").utf8))
        try h.synchronize()
    }

    /// Model, optimizer state, the methods' state, epoch and config in one atomically
    /// written file.
    func saveCheckpoint(elapsed: Double) throws {
        var tensors = ModelState.tensors(of: model, prefix: "model.")
        for (p, b) in zip(optimizer.parameters, optimizer.momentumBuffers) {
            tensors.append(("optimizer.momentum_buffer." + p.name, .f32(shape: b.shape, values: b.array)))
        }
        var meta = [
            "format": "clicktrain-checkpoint-1", "epoch": String(completedEpochs), "config": config.yaml(),
            "elapsed_seconds": String(elapsed),
        ]
        for method in methods {
            let ck = try method.checkpoint()
            meta.merge(ck.metadata) { a, _ in a }
            for (name, t) in ck.tensors { tensors.append((name, .f32(shape: t.shape, values: t.array))) }
        }
        try SafeTensors.write(tensors, metadata: meta, to: checkpointPath)
    }

    /// The latest weights as a plain PyTorch-compatible `model.safetensors`, and the
    /// methods' files beside it.
    public func saveModel() throws {
        var meta = ["format": "pt", "model": modelName, "dataset": config.dataset.rawValue,
                    "input": "\(input.channels)x\(input.size)x\(input.size)", "classes": String(input.classes),
                    "epochs": String(completedEpochs)]
        for method in methods { meta.merge(method.modelMetadata()) { a, _ in a } }
        try SafeTensors.write(ModelState.tensors(of: model), metadata: meta, to: modelPath)
        for method in methods {
            for (name, contents) in try method.runFiles(modelMetadata: meta) { try atomicWrite(contents, to: runDir + "/" + name) }
        }
    }
}

func jsonLine<T: Encodable>(_ v: T) -> String {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys]
    return String(decoding: try! e.encode(v), as: UTF8.self)
}
