import ClickTrainCore
import ClickTrainNN

/// The pruning decisions for one 3x3 conv weight: per kernel (f, c) its pattern (an index
/// into `pool`) and whether connectivity pruning removed it.
public struct PrunedLayer: Codable, Sendable, Equatable {
    /// Parameter name, e.g. `layer1.0.conv1.weight`.
    public var name: String
    /// [F, C, 3, 3].
    public var shape: [Int]
    /// Fraction of kernels removed.
    public var ratio: Double
    public var pool: [Pattern]
    public var patternIDs: [UInt8]
    public var removed: [Bool]

    public init(name: String, shape: [Int], ratio: Double, pool: [Pattern], patternIDs: [UInt8], removed: [Bool]) {
        precondition(shape.count == 4 && shape[2] == 3 && shape[3] == 3, "PrunedLayer: \(name) is \(shape), not 3x3")
        precondition(patternIDs.count == shape[0] * shape[1] && removed.count == patternIDs.count,
                     "PrunedLayer: \(name) needs one pattern and flag per kernel")
        self.name = name
        self.shape = shape
        self.ratio = ratio
        self.pool = pool
        self.patternIDs = patternIDs
        self.removed = removed
    }

    public var kernels: Int { shape[0] * shape[1] }

    /// Checks a layer read from a file against the weight it is for: one pattern and flag
    /// per kernel, every pattern in the pool.
    public func check(weightShape: [Int]) throws {
        guard shape == weightShape, shape.count == 4, shape[2] == 3, shape[3] == 3 else {
            throw PruningRatios.Error(detail: "layer '\(name)' is \(shape), its weight \(weightShape)")
        }
        guard patternIDs.count == kernels, removed.count == kernels, !pool.isEmpty,
              patternIDs.allSatisfy({ Int($0) < pool.count }) else {
            throw PruningRatios.Error(detail: "layer '\(name)': patterns, flags or pool do not fit its \(kernels) kernels")
        }
    }
    public var keptKernels: Int { removed.filter { !$0 }.count }

    /// The 0/1 mask of the weight: the kernel's pattern, or zeros when removed.
    public func mask() -> Tensor {
        let m = Tensor(shape: shape)
        for k in 0..<kernels where !removed[k] {
            let p = pool[Int(patternIDs[k])]
            for i in 0..<9 where p.contains(i) { m[k * 9 + i] = 1 }
        }
        return m
    }

    /// Kernels per pattern (index into `pool`), removed kernels not counted.
    public var patternHistogram: [Int] {
        var h = [Int](repeating: 0, count: pool.count)
        for k in 0..<kernels where !removed[k] { h[Int(patternIDs[k])] += 1 }
        return h
    }
}

/// Everything the pruning schedule decided so far; saved in checkpoints (resume) and as
/// `pruning.json` beside `model.safetensors`.
public struct PruningState: Codable, Sendable, Equatable {
    public var method: String
    /// Weights kept per kernel (the n of the patterns).
    public var n: Int
    /// Patterns and connectivity chosen (stage 3 done).
    public var chosen = false
    /// Masks applied and enforced (stage 5).
    public var hardPruned = false
    public var chooseEpoch: Int
    public var hardEpoch: Int
    public var layers: [PrunedLayer] = []

    public init(method: String, n: Int, chooseEpoch: Int, hardEpoch: Int) {
        self.method = method
        self.n = n
        self.chooseEpoch = chooseEpoch
        self.hardEpoch = hardEpoch
    }
}
