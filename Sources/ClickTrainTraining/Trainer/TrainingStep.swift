import ClickTrainCore
import ClickTrainNN
import Foundation

/// One training step — forward, loss, backward, the methods' hooks, optimizer step — the
/// same for `clicktrain train` and `clicktrain bench`.
public final class TrainingStep {
    public let model: any Layer
    public var optimizer: SGD
    /// Called in order at every hook.
    public var methods: [any TrainingMethod]
    public var labelSmoothing: Float
    /// Data parallelism: the ranks whose mean loss every hook sees (so that a method that
    /// derives a setting from the loss decides the same on every rank).
    public var group: (any ProcessGroup)?
    /// The loss gradient [batch, classes], reused every step.
    let grad: Tensor
    /// Runs the whole step instead of the CPU kernels (`Trainer.use(device:)`).
    public internal(set) var device: (any StepDevice)?

    /// One step's mean loss and correctly classified images of the batch.
    public struct Result: Sendable {
        /// The batch's mean loss (with a group: over the ranks' shards together).
        public var loss: Float
        /// Images whose arg-max logit is their label (this process's images).
        public var correct: Int
        /// Forward pass and loss.
        public var forwardSeconds: Double
        /// `model.backward` alone.
        public var backwardSeconds: Double
        /// The whole step, hooks and optimizer included.
        public var seconds: Double
    }

    /// The loss was not finite; nothing was changed (no backward, no update).
    public struct NonFiniteLoss: Error {
        public let loss: Float
    }

    /// - Parameters: batchSize and classes size the loss gradient (smaller batches use its first rows).
    public init(model: any Layer, optimizer: SGD, methods: [any TrainingMethod], batchSize: Int, classes: Int,
                labelSmoothing: Float = 0) {
        self.model = model
        self.optimizer = optimizer
        self.methods = methods
        self.labelSmoothing = labelSmoothing
        grad = Tensor(shape: [batchSize, classes])
    }

    /// Runs one step on `images` [B, C, H, W] with their `labels` (B ≤ the batch size).
    public func run(images: Tensor, labels: UnsafeBufferPointer<Int32>, info: StepInfo) throws -> Result {
        var info = info
        let t0 = now()
        if let device {
            for m in methods { m.stepStart(info) }
            let hooked = methods.contains { $0.usesStepHooks(info) }
            let hooks: ((Float) throws -> Void)? = !hooked ? nil : { [methods] loss in
                guard loss.isFinite else { throw NonFiniteLoss(loss: loss) }
                info.loss = loss
                for m in methods { m.afterBackward(info) }
                for m in methods { m.beforeOptimizerStep(info) }
            }
            let r = try device.trainStep(images: images, labels: labels, learningRate: optimizer.learningRate,
                                         hooks: hooks)
            guard r.loss.isFinite else { throw NonFiniteLoss(loss: r.loss) }
            let t = now() - t0
            return Result(loss: r.loss, correct: r.correct, forwardSeconds: 0, backwardSeconds: 0, seconds: t)
        }
        var profileStart = WorkProfile.start()
        for m in methods { m.stepStart(info) }
        WorkProfile.stop(.methods, since: profileStart)
        let logits = model.forward(images)
        profileStart = WorkProfile.start()
        let n = images.shape[0]
        let g = n == grad.shape[0] ? grad : grad.firstRows(n)
        let (ownLoss, correct) = softmaxCrossEntropy(logits: logits, labels: labels, labelSmoothing: labelSmoothing,
                                                     grad: g)
        var loss = ownLoss
        if let group, group.size > 1 {
            withUnsafeMutablePointer(to: &loss) { group.allreduceSum(UnsafeMutableBufferPointer(start: $0, count: 1)) }
            loss /= Float(group.size)
        }
        WorkProfile.stop(.loss, since: profileStart)
        guard loss.isFinite else { throw NonFiniteLoss(loss: loss) }
        info.loss = loss
        let t1 = now()
        _ = model.backward(g)
        let t2 = now()
        profileStart = WorkProfile.start()
        for m in methods { m.afterBackward(info) }
        for m in methods { m.beforeOptimizerStep(info) }
        WorkProfile.stop(.methods, since: profileStart)
        profileStart = WorkProfile.start()
        optimizer.step()
        WorkProfile.stop(.optimizer, since: profileStart)
        let t3 = now()
        return Result(loss: loss, correct: correct, forwardSeconds: t1 - t0, backwardSeconds: t2 - t1, seconds: t3 - t0)
    }

    /// `run` with labels from an array.
    public func run(images: Tensor, labels: [Int32], info: StepInfo) throws -> Result {
        try labels.withUnsafeBufferPointer { try run(images: images, labels: $0, info: info) }
    }
}
