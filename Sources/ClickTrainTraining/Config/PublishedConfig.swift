import ClickTrainData
import ClickTrainNN
import ClickTrainPruning
import Foundation
import Yams

/// The ClickTrain authors' published configuration files as they are: keys nested in a
/// `base:` section (training) and a `pt:` section (pattern pruning; its presence means
/// ClickTrain), `schedule` as a string of milestones (`'55 130'`), `prune_ratios` keyed by
/// `module.`-prefixed parameter names, and the data set and model named by the file
/// (`{dataset}_{arch}_v{N}.yaml`).
extension RunConfig {
    /// The sections of a published file, in the order they apply.
    static let publishedSections = ["base", "pt"]

    /// The top-level entries of `map`, with those of the published sections lifted to the
    /// top; `published` says whether there were any.
    static func flattened(_ map: Node.Mapping) -> (entries: [(String, Node)], published: Bool) {
        var entries: [(String, Node)] = [], published = false, clicktrain = false
        for (k, v) in map {
            guard let key = k.string else { continue }
            if publishedSections.contains(key), let section = v.mapping {
                published = true
                clicktrain = clicktrain || key == "pt"
                for (sk, sv) in section { if let s = sk.string { entries.append((s, sv)) } }
            } else {
                entries.append((key, v))
            }
        }
        // A `pt:` section means ClickTrain, unless the file names a method itself.
        if clicktrain && !entries.contains(where: { $0.0 == "method" }) {
            entries.append(("method", Node(MethodKind.clicktrain.rawValue)))
        }
        return (entries, published)
    }

    /// Data set and model from a published file's name, `cifar10_resnet32_v1.yaml`.
    static func publishedNames(of path: String) -> (dataset: DatasetKind, model: String)? {
        let name = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
        let parts = name.split(separator: "_")
        guard parts.count >= 2, let data = try? DatasetKind(name: String(parts[0])) else { return nil }
        let model = ModelZoo.canonicalName(String(parts[1]))
        return ModelZoo.names.contains(model) ? (data, model) : nil
    }

    /// A new length for a run read from a published file: the choice and hard-prune epochs
    /// and the LR milestones scale with the epochs, as the file's schedule is meant, except
    /// those in `given` (keys set on the command line, taken as written).
    public mutating func rescaleSchedule(from old: Int, except given: Set<String> = []) {
        guard published, old > 0, epochs != old else { return }
        let f = Double(epochs) / Double(old)
        func scaled(_ e: Int) -> Int { min(epochs, max(0, Int((Double(e) * f).rounded()))) }
        if !given.contains("epoch_choose_p_k") { epoch_choose_p_k = epoch_choose_p_k.map(scaled) }
        if !given.contains("epoch_hard_prune_p_k") { epoch_hard_prune_p_k = epoch_hard_prune_p_k.map(scaled) }
        if !given.contains("schedule") { schedule = schedule.map(scaled) }
        if method == .clicktrain, let c = epoch_choose_p_k, c < 1 { epoch_choose_p_k = 1 }
    }

    /// For a published file: the ratios of the layers `model` has (names mapped to ours),
    /// and the names of those it lacks (skipped, with one warning).
    public func publishedRatios(for model: any Layer) -> (ratios: [String: Double], skipped: [String]) {
        let prunable = Set(PatternPruner.prunableParameters(of: model).prunable.map(\.name))
        var kept: [String: Double] = [:], skipped: [String] = []
        for (key, value) in prune_ratios ?? [:] {
            if prunable.contains(PruningRatios.parameterName(official: key)) { kept[key] = value } else { skipped.append(key) }
        }
        return (kept, skipped.sorted())
    }
}
