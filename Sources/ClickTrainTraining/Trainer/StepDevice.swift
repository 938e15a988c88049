import ClickTrainCore

/// Where a run's arithmetic happens when not on the CPU kernels (`--device cuda`): the
/// whole training step (forward, loss, backward, SGD) and evaluation. The CPU model and
/// optimizer stay the record of the run: `download` brings the device's weights, momentum
/// and batch-norm statistics back before they are saved, `upload` sends them when the
/// trainer takes the device (`Trainer.use(device:)`: a new run, `--init` or a resume) and
/// after a method's change at an epoch's start (hard pruning).
public protocol StepDevice: AnyObject {
    /// The device in words ("NVIDIA H100 80GB HBM3, sm_90").
    var name: String { get }
    /// One step at `learningRate`: the batch's mean loss and correctly classified images.
    /// A non-finite loss changes no weight. With `hooks`, after backward the device's
    /// weights and gradients are copied into the CPU parameters, `hooks` runs with the
    /// step's loss (the training methods: importance, group lasso), and the weights and
    /// gradients it leaves go back before the update.
    func trainStep(images: Tensor, labels: UnsafeBufferPointer<Int32>, learningRate: Float,
                   hooks: ((Float) throws -> Void)?) throws -> (loss: Float, correct: Int)
    /// Evaluation mode: the batch's summed loss and correct images.
    func evaluate(images: Tensor, labels: UnsafeBufferPointer<Int32>) throws -> (lossSum: Double, correct: Int)
    func download() throws
    func upload() throws
}
