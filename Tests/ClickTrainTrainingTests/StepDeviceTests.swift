import ClickTrainCore
import ClickTrainNN
import ClickTrainTestSupport
import ClickTrainTraining
import Foundation
import Testing

/// A `StepDevice` that computes on a second CPU model, its "device copy": what the
/// trainer sees of a GPU (upload, steps and evaluation there, download back) without one.
/// Since the copy computes exactly what the trainer's own model would, a run through it
/// must end bit for bit like a run without it, if the trainer moves state at the right
/// moments.
final class TwinDevice: StepDevice {
    let record: any Layer, recordOptimizer: SGD
    let twin: Sequential, twinOptimizer: SGD, step: TrainingStep
    var uploads = 0, downloads = 0
    var name: String { "twin" }

    init(_ trainer: Trainer) throws {
        record = trainer.model
        recordOptimizer = trainer.optimizer
        twin = try ModelZoo.make(trainer.modelName, input: trainer.input, seed: 12345)
        let o = trainer.optimizer
        twinOptimizer = SGD(parameters: twin.parameters(), learningRate: o.learningRate, momentum: o.momentum,
                            nesterov: o.nesterov, weightDecay: o.weightDecay, decayBiasAndNorm: o.decayBiasAndNorm)
        step = TrainingStep(model: twin, optimizer: twinOptimizer, methods: [], batchSize: trainer.config.batch_size,
                            classes: trainer.input.classes, labelSmoothing: trainer.config.label_smoothing)
        try upload()
    }

    /// Every parameter, buffer, counter and momentum buffer from `a` to `b`.
    static func copy(_ a: any Layer, _ ao: SGD, to b: any Layer, _ bo: SGD) {
        for ((_, x), (_, y)) in zip(a.stateDict(), b.stateDict()) {
            switch (x, y) {
            case (.parameter(let p), .parameter(let q)): q.value.copy(from: p.value)
            case (.buffer(let s), .buffer(let t)): t.copy(from: s)
            case (.counter(let s), .counter(let t)): t.value = s.value
            default: preconditionFailure("twin state differs")
            }
        }
        for (s, t) in zip(ao.momentumBuffers, bo.momentumBuffers) { t.copy(from: s) }
    }

    func upload() throws {
        uploads += 1
        TwinDevice.copy(record, recordOptimizer, to: twin, twinOptimizer)
    }

    func download() throws {
        downloads += 1
        TwinDevice.copy(twin, twinOptimizer, to: record, recordOptimizer)
    }

    func trainStep(images: Tensor, labels: UnsafeBufferPointer<Int32>, learningRate: Float) throws
        -> (loss: Float, correct: Int)
    {
        twinOptimizer.learningRate = learningRate
        let r = try step.run(images: images, labels: labels, info: StepInfo(epoch: 0, step: 0, stepsPerEpoch: 1))
        return (r.loss, r.correct)
    }

    func evaluate(images: Tensor, labels: UnsafeBufferPointer<Int32>) throws -> (lossSum: Double, correct: Int) {
        twin.train(false)
        defer { twin.train(true) }
        let (l, ok) = softmaxCrossEntropy(logits: twin.forward(images), labels: labels, grad: nil)
        return (Double(l) * Double(images.shape[0]), ok)
    }
}

@Suite("Training on a step device", .serialized)
struct StepDeviceTests {
    /// Through the device: the same metrics, weights, running statistics and checkpoint as
    /// on the CPU; a run started on the CPU resumes on the device and ends the same.
    @Test func aDeviceRunEndsLikeACPURunAndResumesAcrossDevices() throws {
        let (c, dirCPU) = shortResNetRun(epochs: 3)
        let cpu = quiet(try Trainer(config: c, runDir: dirCPU))
        let mCPU = try cpu.run()

        let dirDev = SyntheticData.temporaryDirectory("run")
        let onDevice = quiet(try Trainer(config: c, runDir: dirDev))
        let twin = try TwinDevice(onDevice)
        try onDevice.use(device: twin)
        let mDev = try onDevice.run()
        #expect(comparable(mDev) == comparable(mCPU))
        #expect(weights(onDevice) == weights(cpu))
        #expect(twin.downloads == 3)
        let model = { try Data(contentsOf: URL(fileURLWithPath: $0 + "/model.safetensors")) }
        #expect(try model(dirCPU) == model(dirDev))

        // One epoch on the CPU, the rest on the device.
        let dirMixed = SyntheticData.temporaryDirectory("run")
        try quiet(Trainer(config: c, runDir: dirMixed)).run(untilEpoch: 1)
        let resumed = quiet(try Trainer.resume(runDir: dirMixed))
        try resumed.use(device: TwinDevice(resumed))
        let mMixed = try resumed.run()
        #expect(comparable(mMixed) == comparable(mCPU))
        #expect(weights(resumed) == weights(cpu))
    }

    /// Pruning methods and gradient pruning run their hooks on CPU gradients: refused.
    @Test func methodsAreRefusedOnADevice() throws {
        let (c, dir) = shortResNetRun(epochs: 2, method: .clicktrain)
        let t = quiet(try Trainer(config: c, runDir: dir))
        #expect { try t.use(device: TwinDevice(t)) } throws: { "\($0)".contains("--device cuda does not run") }
    }
}
