import ClickTrainCore
import ClickTrainNN
import Foundation

/// The PruneTrain baseline (Lym et al., SC'19): group lasso over every conv's
/// output channels (filters) and input channels, with λ set at the first step so that
/// `λ·GL / (λ·GL + loss) = 0.2`, and every `interval` epochs the channels whose weights
/// all fell below `threshold` are removed and the network rebuilt smaller.
///
/// Channels removed here are the inner channels of residual blocks (conv1's filters,
/// bn1, conv2's input channels), the ones no residual addition ties to other layers;
/// PruneTrain's channel union across a stage's residual path is not implemented.
public final class PruneTrain {
    public let interval: Int
    public let threshold: Float
    public let penaltyShare: Float
    /// Set at the first step.
    public private(set) var lambda: Float?
    /// Inner width of every block, by module name (`layer1.0`), as the model now has them.
    public private(set) var widths: [String: Int] = [:]

    public init(model: any Layer, interval: Int, threshold: Float = 1e-4, penaltyShare: Float = 0.2) throws {
        guard interval >= 1 else { throw PruningRatios.Error(detail: "PruneTrain interval must be at least 1 epoch") }
        guard penaltyShare > 0 && penaltyShare < 1 else { throw PruningRatios.Error(detail: "penalty share must be in (0, 1)") }
        self.interval = interval
        self.threshold = threshold
        self.penaltyShare = penaltyShare
        widths = PruneTrain.blocks(of: model).reduce(into: [:]) { $0[$1.0] = $1.1.innerWidth }
        guard !widths.isEmpty else { throw PruningRatios.Error(detail: "PruneTrain here needs residual blocks (a ResNet)") }
    }

    static func blocks(of model: any Layer) -> [(String, BasicBlock)] {
        model.namedModules().compactMap { m in (m.1 as? BasicBlock).map { (m.0, $0) } }
    }

    static func convWeights(_ model: any Layer) -> [Parameter] {
        model.namedModules().compactMap { ($0.1 as? Conv2d)?.weight }
    }

    /// GL = Σ over conv weights of Σ_f ‖W[f]‖ + Σ_c ‖W[:, c]‖.
    public static func groupLasso(_ model: any Layer) -> Double {
        var total = 0.0
        for p in convWeights(model) {
            let (f, c, kk) = (p.shape[0], p.shape[1], p.shape[2] * p.shape[3])
            let w = p.value.data
            var outSq = [Double](repeating: 0, count: f), inSq = [Double](repeating: 0, count: c)
            for i in 0..<f { for j in 0..<c { for t in 0..<kk {
                let v = Double(w[(i * c + j) * kk + t])
                outSq[i] += v * v
                inSq[j] += v * v
            } } }
            total += outSq.reduce(0) { $0 + $1.squareRoot() } + inSq.reduce(0) { $0 + $1.squareRoot() }
        }
        return total
    }

    /// Adds λ·∂GL/∂W to the conv gradients; the first call sets λ from `loss`.
    public func addGradient(model: any Layer, loss: Float) {
        if lambda == nil {
            let gl = PruneTrain.groupLasso(model)
            lambda = gl > 0 ? Float(Double(penaltyShare) / Double(1 - penaltyShare) * Double(loss) / gl) : 0
        }
        let lam = lambda!
        for p in PruneTrain.convWeights(model) {
            let (f, c, kk) = (p.shape[0], p.shape[1], p.shape[2] * p.shape[3])
            let w = p.value.data, g = p.grad.data
            var outN = [Float](repeating: 0, count: f), inN = [Float](repeating: 0, count: c)
            for i in 0..<f { for j in 0..<c { for t in 0..<kk {
                let v = w[(i * c + j) * kk + t]
                outN[i] += v * v
                inN[j] += v * v
            } } }
            for i in 0..<f { outN[i] = lam / (outN[i].squareRoot() + 1e-12) }
            for j in 0..<c { inN[j] = lam / (inN[j].squareRoot() + 1e-12) }
            for i in 0..<f { for j in 0..<c { for t in 0..<kk {
                let k = (i * c + j) * kk + t
                g[k] += (outN[i] + inN[j]) * w[k]
            } } }
        }
    }

    /// At the end of every `interval`-th epoch: removes dead inner channels. Returns the
    /// blocks that changed (the caller rebuilds its optimizer state for them).
    public func reconfigure(model: any Layer, completedEpochs: Int) -> [String: [Int]] {
        guard completedEpochs % interval == 0 else { return [:] }
        var changed: [String: [Int]] = [:]
        for (name, b) in PruneTrain.blocks(of: model) {
            let w1 = b.conv1.weight.value, w2 = b.conv2.weight.value
            let width = b.innerWidth, c1 = w1.count / width, k2 = w2.shape[2] * w2.shape[3]
            var keep: [Int] = []
            for j in 0..<width {
                var m1: Float = 0, m2: Float = 0
                for i in 0..<c1 { m1 = max(m1, abs(w1[j * c1 + i])) }
                for f in 0..<w2.shape[0] { for t in 0..<k2 { m2 = max(m2, abs(w2[(f * width + j) * k2 + t])) } }
                if m1 >= threshold && m2 >= threshold { keep.append(j) }
            }
            if keep.isEmpty { keep = [0] }  // a block keeps at least one channel
            if keep.count < width {
                b.shrinkInner(keeping: keep)
                changed[name] = keep
                widths[name] = keep.count
            }
        }
        if !changed.isEmpty { model.assignNames() }
        return changed
    }

    /// Rebuilds saved widths (resume, loading a PruneTrain model): the first `w` channels
    /// of each block; the saved weights are loaded afterwards.
    public static func apply(widths: [String: Int], to model: any Layer) throws {
        for (name, b) in blocks(of: model) {
            guard let w = widths[name] else { continue }
            guard w >= 1 && w <= b.innerWidth else {
                throw PruningRatios.Error(detail: "saved width \(w) for block '\(name)' does not fit its \(b.innerWidth) channels")
            }
            if w < b.innerWidth { b.shrinkInner(keeping: Array(0..<w)) }
        }
        model.assignNames()
    }

    public func restore(widths w: [String: Int], lambda l: Float?) {
        widths = w
        lambda = l
    }
}
