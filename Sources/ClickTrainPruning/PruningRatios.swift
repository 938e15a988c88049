import Foundation

/// How much of each layer connectivity pruning removes.
public enum PruningRatios {
    /// A compression target or ratio that cannot be met, with the reason.
    public struct Error: Swift.Error, CustomStringConvertible {
        public let detail: String
        public var description: String { detail }
    }

    /// Per-layer ratios from one target conv compression ratio (dense conv weights over
    /// remaining non-zero conv weights, unpruned convs included). Ratios grow linearly
    /// with depth by `spread` from the first to the last prunable layer (the official
    /// 8.6x ResNet-32 config: 55 / 65 / 75 %, spread 0.2), shifted together until the
    /// target is met.
    /// - Parameters: layers: (name, weight count) of the prunable 3x3 convs, in order;
    ///   otherConvWeights: weights of convs that are not pruned; n: weights kept per kernel.
    public static func fromTarget(_ target: Double, layers: [(String, Int)], otherConvWeights: Int, n: Int,
                                  spread: Double = 0.2) throws -> [String: Double] {
        guard target >= 1 else { throw Error(detail: "compression target must be at least 1, got \(target)") }
        let total = Double(layers.reduce(0) { $0 + $1.1 } + otherConvWeights)
        let depth = layers.count
        func ratios(_ base: Double) -> [Double] {
            (0..<depth).map { i in
                let t = depth > 1 ? Double(i) / Double(depth - 1) : 0.5
                return min(0.99, max(0, base + spread * (t - 0.5)))
            }
        }
        func compression(_ base: Double) -> Double {
            let r = ratios(base)
            var kept = Double(otherConvWeights)
            for (i, l) in layers.enumerated() { kept += Double(l.1) * Double(n) / 9 * (1 - r[i]) }
            return total / kept
        }
        let maxC = compression(1.5)
        guard compression(-0.5) <= target + 1e-9 else {
            throw Error(detail: "compression \(target)x is below what \(n)-of-9 patterns alone give (\(String(format: "%.2f", compression(-0.5)))x); use a larger target or more weights per pattern")
        }
        guard maxC >= target else {
            throw Error(detail: "compression \(target)x is out of reach: removing 99% of the prunable kernels gives \(String(format: "%.1f", maxC))x")
        }
        var lo = -0.5, hi = 1.5
        for _ in 0..<80 {
            let m = (lo + hi) / 2
            if compression(m) < target { lo = m } else { hi = m }
        }
        let r = ratios(hi)
        return Dictionary(uniqueKeysWithValues: zip(layers.map(\.0), r))
    }

    /// Our parameter name for a name in the official configs: without DataParallel's
    /// `module.` prefix, `feature.N` (their VGG) as `features.N`, `.weight` appended if absent.
    public static func parameterName(official key: String) -> String {
        var name = key.hasPrefix("module.") ? String(key.dropFirst(7)) : key
        if name.hasPrefix("feature.") { name = "features." + name.dropFirst(8) }
        if !name.hasSuffix(".weight") { name += ".weight" }
        return name
    }

    /// Reads the official configs' `prune_ratios` (percent, keys with a `module.` prefix
    /// from DataParallel) onto our parameter names; every key must name a prunable layer.
    public static func fromOfficial(_ raw: [String: Double], prunable: [String]) throws -> [String: Double] {
        var out: [String: Double] = [:]
        for (key, value) in raw {
            let name = parameterName(official: key)
            guard prunable.contains(name) else {
                throw Error(detail: "prune_ratios: '\(key)' is not a prunable 3x3 conv of this model (prunable: \(prunable.prefix(3).joined(separator: ", ")), …)")
            }
            guard value >= 0 && value < 100 else { throw Error(detail: "prune_ratios: '\(key)' = \(value), expected a percentage in [0, 100)") }
            out[name] = value / 100
        }
        return out
    }
}
