import ClickTrainCore
import ClickTrainCUDA
import ClickTrainNN
import ClickTrainTraining
import Foundation

/// `clicktrain bench --device cuda`: the GPU against the CPU from the same weights on the
/// same batch (logits at inference, the first two steps' losses, the update each tensor
/// got), then the GPU's training step and inference timed.
struct GPUBenchmark: Encodable {
    var device: String
    var model: String
    var batch: Int
    var input: String
    var train_ms_per_step: Double
    var infer_ms_per_batch: Double
    var images_per_s_train: Double
    /// Inference logits: max |gpu − cpu| / max |cpu|.
    var logits_rel_err: Double
    /// The first top-level layer whose inference output differs by more than 1e-4, if any.
    var first_differing_layer: String?
    /// The two steps' losses on the same batch (the second is the loss after one update).
    var loss_cpu: [Double]
    var loss_gpu: [Double]
    /// The worst tensor's update after two steps, max |Δgpu − Δcpu| / max |Δcpu|, and its name.
    var update_rel_err: Double
    var update_worst: String
    /// Batch-norm running statistics after the two steps, the same measure.
    var running_stats_rel_err: Double

    static func relErr(_ a: [Float], _ b: [Float]) -> Double {
        var diff: Float = 0, scale: Float = 0
        for (x, y) in zip(a, b) {
            diff = max(diff, abs(x - y))
            scale = max(scale, abs(y))
        }
        return scale > 0 ? Double(diff / scale) : Double(diff)
    }

    static func run(_ gpu: CUDADevice, modelName: String, input inp: ModelInput, batch: Int, warmup: Int, runs: Int)
        throws -> GPUBenchmark
    {
        let gpuModel = try ModelZoo.make(modelName, input: inp, seed: 1)
        let cpuModel = try ModelZoo.make(modelName, input: inp, seed: 1)
        func sgd(_ m: Sequential) -> SGD { SGD(parameters: m.parameters(), learningRate: 0.05, momentum: 0.9, weightDecay: 5e-4) }
        let gpuOpt = sgd(gpuModel), cpuOpt = sgd(cpuModel)
        var rng = RNG(seed: 7, stream: 11)
        let images = Tensor(shape: [batch, inp.channels, inp.size, inp.size])
        for i in 0..<images.count { images.data[i] = rng.normal() }
        let labels = (0..<batch).map { _ in Int32(rng.next() % UInt64(inp.classes)) }
        let e = try engine(on: gpu, model: gpuModel, optimizer: gpuOpt, input: inp, maxBatch: batch)
        try e.upload()

        // Layer by layer on the CPU, to name the first top-level layer whose output differs.
        cpuModel.train(false)
        var h = images
        var cpuStages: [String: [Float]] = [:]
        for (name, layer) in cpuModel.layers {
            h = layer.forward(h)
            cpuStages[name] = h.array
        }
        cpuModel.train(true)
        let stages = try e.stageOutputs(images)
        let logitsErr = relErr(stages.last!.values, cpuStages[stages.last!.name]!)
        let firstDiffering = stages.first { relErr($0.values, cpuStages[$0.name] ?? []) > 1e-4 }?.name

        let before = cpuModel.parameters().map(\.value.array)
        let cpuStep = TrainingStep(model: cpuModel, optimizer: cpuOpt, methods: [], batchSize: batch, classes: inp.classes)
        var lossCPU: [Double] = [], lossGPU: [Double] = []
        for i in 0..<2 {
            let c = try cpuStep.run(images: images, labels: labels, info: StepInfo(epoch: 0, step: i, stepsPerEpoch: 2))
            let g = try labels.withUnsafeBufferPointer { try e.trainStep(images: images, labels: $0, learningRate: 0.05, hooks: nil) }
            lossCPU.append(Double(c.loss))
            lossGPU.append(Double(g.loss))
        }
        try e.download()
        var worst = 0.0, worstName = ""
        for ((gp, cp), b0) in zip(zip(gpuModel.parameters(), cpuModel.parameters()), before) {
            let dg = zip(gp.value.array, b0).map { $0 - $1 }, dc = zip(cp.value.array, b0).map { $0 - $1 }
            let err = relErr(dg, dc)
            if err > worst || worstName.isEmpty { (worst, worstName) = (err, cp.name) }
        }
        var statsErr = 0.0
        for ((_, g), (_, c)) in zip(gpuModel.stateDict(), cpuModel.stateDict()) {
            if case .buffer(let gt) = g, case .buffer(let ct) = c { statsErr = max(statsErr, relErr(gt.array, ct.array)) }
        }

        var train: [Double] = []
        try labels.withUnsafeBufferPointer { lp in
            for i in 0..<(warmup + runs) {
                let t0 = now()
                _ = try e.trainStep(images: images, labels: lp, learningRate: 0.05, hooks: nil)
                if i >= warmup { train.append(now() - t0) }
            }
        }
        var infer: [Double] = []
        try labels.withUnsafeBufferPointer { lp in
            for i in 0..<(warmup + runs) {
                let t0 = now()
                _ = try e.evaluate(images: images, labels: lp)
                if i >= warmup { infer.append(now() - t0) }
            }
        }
        let trainMs = 1000 * median(train)
        return GPUBenchmark(device: e.name, model: ModelZoo.canonicalName(modelName), batch: batch,
                            input: "\(inp.channels)x\(inp.size)x\(inp.size)", train_ms_per_step: trainMs,
                            infer_ms_per_batch: 1000 * median(infer), images_per_s_train: Double(batch) / trainMs * 1000,
                            logits_rel_err: logitsErr, first_differing_layer: firstDiffering, loss_cpu: lossCPU, loss_gpu: lossGPU, update_rel_err: worst,
                            update_worst: worstName, running_stats_rel_err: statsErr)
    }

    var text: String {
        String(format: """
            model %@  batch %d  input %@  device %@
              train step   %.2f ms  (%.0f images/s; data staging and one synchronisation included)
              inference    %.2f ms
              against the CPU from the same weights and batch: inference logits %.2e%@, losses of two steps \
            %.6f / %.6f (cpu) and %.6f / %.6f (gpu), worst update %.2e (%@), running statistics %.2e
            """, model, batch, input, device, train_ms_per_step, images_per_s_train, infer_ms_per_batch, logits_rel_err,
            first_differing_layer.map { " (first differing layer: \($0))" } ?? "", loss_cpu[0], loss_cpu[1], loss_gpu[0],
            loss_gpu[1], update_rel_err, update_worst, running_stats_rel_err)
    }
}
