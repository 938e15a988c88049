import ClickTrainCore

/// A trainable tensor with its gradient and an optional pruning mask.
///
/// The mask sits beside the weight (PyTorch `prune`'s `weight_orig` + `weight_mask`
/// idea): pruning writes zeros into `mask`, the optimizer keeps masked entries at zero.
public final class Parameter: @unchecked Sendable {
    /// PyTorch `state_dict` name (`layer1.0.conv1.weight`), set by `Module.assignNames()`.
    public var name: String
    public let value: Tensor
    public let grad: Tensor
    /// Kept positions (1) of a pruned weight. Assign a new tensor to change it: layers
    /// cache formats built from a mask by its identity.
    public var mask: Tensor?
    /// Excluded from weight decay when the optimizer's `decayBNAndBias` is off.
    public let isBiasOrNorm: Bool

    public init(_ value: Tensor, name: String = "", isBiasOrNorm: Bool = false) {
        self.value = value
        self.grad = Tensor(shape: value.shape)
        self.name = name
        self.isBiasOrNorm = isBiasOrNorm
    }

    public var shape: [Int] { value.shape }

    /// Multiplies value (and gradient) by the mask, if any.
    public func applyMask() {
        guard let m = mask else { return }
        let v = value.data, g = grad.data, mp = m.data
        for i in 0..<value.count { v[i] *= mp[i]; g[i] *= mp[i] }
    }
}

/// A persistent non-trainable state tensor (BN running statistics).
public enum StateEntry {
    case parameter(Parameter)
    case buffer(Tensor)
    /// An integer counter stored as int64 (BN `num_batches_tracked`).
    case counter(Counter)
}

/// A boxed int64, so a layer and the state dict share it.
public final class Counter: @unchecked Sendable {
    public var value: Int64
    public init(_ v: Int64 = 0) { value = v }
}
