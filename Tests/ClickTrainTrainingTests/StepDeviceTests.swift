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
    let twin: Sequential, twinOptimizer: SGD, grad: Tensor, labelSmoothing: Float
    var uploads = 0, downloads = 0, hookedSteps = 0
    var name: String { "twin" }

    init(_ trainer: Trainer) throws {
        record = trainer.model
        recordOptimizer = trainer.optimizer
        twin = try ModelZoo.make(trainer.modelName, input: trainer.input, seed: 12345)
        let o = trainer.optimizer
        twinOptimizer = SGD(parameters: twin.parameters(), learningRate: o.learningRate, momentum: o.momentum,
                            nesterov: o.nesterov, weightDecay: o.weightDecay, decayBiasAndNorm: o.decayBiasAndNorm)
        grad = Tensor(shape: [trainer.config.batch_size, trainer.input.classes])
        labelSmoothing = trainer.config.label_smoothing
    }

    /// Every parameter (with its mask), buffer, counter and momentum buffer from `a` to `b`.
    static func copy(_ a: any Layer, _ ao: SGD, to b: any Layer, _ bo: SGD) {
        for ((_, x), (_, y)) in zip(a.stateDict(), b.stateDict()) {
            switch (x, y) {
            case (.parameter(let p), .parameter(let q)):
                q.value.copy(from: p.value)
                q.mask = p.mask?.clone()
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

    func trainStep(images: Tensor, labels: UnsafeBufferPointer<Int32>, learningRate: Float,
                   hooks: ((Float) throws -> Void)?) throws -> (loss: Float, correct: Int)
    {
        let n = images.shape[0]
        let g = n == grad.shape[0] ? grad : grad.firstRows(n)
        let (loss, correct) = softmaxCrossEntropy(logits: twin.forward(images), labels: labels,
                                                  labelSmoothing: labelSmoothing, grad: g)
        guard loss.isFinite else { return (loss, correct) }
        _ = twin.backward(g)
        if let hooks {
            hookedSteps += 1
            for (p, q) in zip(twin.parameters(), record.parameters()) {
                q.value.copy(from: p.value)
                q.grad.copy(from: p.grad)
            }
            try hooks(loss)
            for (p, q) in zip(record.parameters(), twin.parameters()) {
                q.value.copy(from: p.value)
                q.grad.copy(from: p.grad)
            }
        }
        twinOptimizer.learningRate = learningRate
        twinOptimizer.step()
        return (loss, correct)
    }

    func evaluate(images: Tensor, labels: UnsafeBufferPointer<Int32>) throws -> (lossSum: Double, correct: Int) {
        twin.train(false)
        defer { twin.train(true) }
        let (l, ok) = softmaxCrossEntropy(logits: twin.forward(images), labels: labels, grad: nil)
        return (Double(l) * Double(images.shape[0]), ok)
    }
}

/// Whether two trainers hold the same weights (a Bool: Swift Testing would diff the arrays).
func sameWeights(_ a: Trainer, _ b: Trainer) -> Bool { weights(a) == weights(b) }

@Suite("Training on a step device", .serialized)
struct StepDeviceTests {
    /// Through the device: the same metrics, weights, running statistics and checkpoint as
    /// on the CPU; a run started on the CPU resumes on the device and ends the same.
    @Test func aDeviceRunEndsLikeACPURunAndResumesAcrossDevices() throws {
        let (c, dirCPU) = shortResNetRun(epochs: 3)
        let cpu = quiet(try Trainer(config: c, runDir: dirCPU))
        let mCPU = try cpu.run()

        let dirDev = SyntheticData.temporaryDirectory("run")
        var made: TwinDevice?
        let onDevice = quiet(try Trainer(config: c, runDir: dirDev) { t in
            made = try TwinDevice(t)
            return made!
        })
        let twin = try #require(made)
        let mDev = try onDevice.run()
        #expect(mDev.allSatisfy { $0.backward_seconds == nil })
        #expect(comparable(mDev) == comparable(mCPU))
        #expect(sameWeights(onDevice, cpu))
        #expect(twin.uploads == 1 && twin.downloads == 3)
        let model = { try Data(contentsOf: URL(fileURLWithPath: $0 + "/model.safetensors")) }
        #expect(try model(dirCPU) == model(dirDev))

        // One epoch on the CPU, the rest on the device.
        let dirMixed = SyntheticData.temporaryDirectory("run")
        try quiet(Trainer(config: c, runDir: dirMixed)).run(untilEpoch: 1)
        let resumed = quiet(try Trainer.resume(runDir: dirMixed))
        try resumed.use(device: TwinDevice(resumed))
        let mMixed = try resumed.run()
        #expect(comparable(mMixed) == comparable(mCPU))
        #expect(sameWeights(resumed, cpu))
    }

    /// ClickTrain and PAT through the device: their hooks on the CPU between the device's
    /// backward and update (importance, group lasso), hard pruning uploaded at the epoch's
    /// start; the same run as on the CPU, bit for bit.
    @Test(arguments: [MethodKind.clicktrain, .pat])
    func patternMethodsThroughADeviceEndLikeOnTheCPU(_ method: MethodKind) throws {
        var (c, dirCPU) = shortResNetRun(epochs: 4, method: method)
        c.epoch_choose_p_k = 1
        c.epoch_hard_prune_p_k = 2
        c.importance_window = 2
        let cpu = quiet(try Trainer(config: c, runDir: dirCPU))
        let mCPU = try cpu.run()
        let onDevice = quiet(try Trainer(config: c, runDir: SyntheticData.temporaryDirectory("run")))
        let twin = try TwinDevice(onDevice)
        try onDevice.use(device: twin)
        let mDev = try onDevice.run()
        #expect(comparable(mDev) == comparable(mCPU))
        // Hooks only where the method uses them: ClickTrain's importance window (2 steps) and
        // its regularised epoch (3 steps); PAT never.
        #expect(twin.hookedSteps == (method == .pat ? 0 : 5))
        #expect(twin.uploads == 1 + 4)  // taken, then after each epoch's start
        #expect(mDev.last?.conv_compression == mCPU.last?.conv_compression && (mDev.last?.conv_compression ?? 0) > 4)
        #expect(sameWeights(onDevice, cpu))
    }

    /// PruneTrain (rebuilds the model) and gradient pruning (inside the backward kernels):
    /// refused with one line.
    @Test func cpuOnlyMethodsAreRefusedOnADevice() throws {
        for (method, gradPrune) in [(MethodKind.prunetrain, 0.0), (.dense, 0.9)] {
            var (c, dir) = shortResNetRun(epochs: 2, method: method)
            c.grad_prune = gradPrune
            let t = quiet(try Trainer(config: c, runDir: dir))
            #expect { try t.use(device: TwinDevice(t)) } throws: { "\($0)".contains("--device cuda does not run") }
        }
    }
}
