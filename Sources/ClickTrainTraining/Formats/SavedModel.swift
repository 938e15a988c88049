import ClickTrainCore
import ClickTrainData
import ClickTrainNN
import ClickTrainPruning
import Foundation

/// A `model.safetensors` written by `clicktrain train`, rebuilt into its network, with the
/// `pruning.json` beside it when the run pruned.
public struct SavedModel {
    public let path: String
    public let name: String
    public let input: ModelInput
    public let dataset: DatasetKind?
    public let model: Sequential
    public let pruning: PruningState?
    /// The architecture before any channel pruning (equal to `model`'s unless PruneTrain
    /// shrank it), for compression and FLOPs saved.
    public let denseReference: ModelCost

    /// Reads a model-zoo model saved by a run (`model.safetensors` or
    /// `model.pattern.safetensors`) and rebuilds it with its pruning state.
    /// - Parameters:
    ///   - path: the saved file.
    ///   - modelName: overrides the name in the file's metadata.
    ///   - override: overrides the input (channels, size, classes) in the file's metadata.
    public init(path: String, modelName: String? = nil, input override: ModelInput? = nil) throws {
        let saved = try SafeTensors.read(path)
        let meta = saved.metadata
        guard let name = modelName ?? meta["model"] else {
            throw StateLoadError(path: path, detail: "its metadata does not name the model; pass --model")
        }
        var inp = override
        if inp == nil, let s = meta["input"] {
            let parts = s.split(separator: "x").compactMap { Int($0) }
            if parts.count == 3, let classes = Int(meta["classes"] ?? "") {
                inp = ModelInput(channels: parts[0], size: parts[1], classes: classes)
            }
        }
        guard let input = inp else { throw StateLoadError(path: path, detail: "its metadata lacks 'input' and 'classes'") }
        self.path = path
        self.name = ModelZoo.canonicalName(name)
        self.input = input
        self.dataset = meta["dataset"].flatMap { try? DatasetKind(name: $0) }
        model = try ModelZoo.make(name, input: input, seed: 0)
        denseReference = ModelCost.measure(model, input: input)
        if let json = meta["inner_widths"] {  // a PruneTrain model: rebuild its smaller blocks first
            guard let widths = try? JSONDecoder().decode([String: Int].self, from: Data(json.utf8)) else {
                throw StateLoadError(path: path, detail: "metadata 'inner_widths' is not a JSON map of block widths")
            }
            try PruneTrain.apply(widths: widths, to: model)
        }
        let pj = ((path as NSString).deletingLastPathComponent as NSString).appendingPathComponent("pruning.json")
        if meta["format"] == PatternFile.format {
            // model.pattern.safetensors: the weights and the pruning state are both in the file.
            let (dense, state) = try PatternFile.expand(saved.tensors, metadata: meta, path: path)
            try ModelState.load(dense, into: model, path: path)
            pruning = state
        } else if let data = FileManager.default.contents(atPath: pj) {
            try ModelState.load(saved.tensors, into: model, path: path)
            do { pruning = try JSONDecoder().decode(PruningState.self, from: data) } catch {
                throw StateLoadError(path: pj, detail: "not a valid pruning state: \(error)")
            }
        } else {
            try ModelState.load(saved.tensors, into: model, path: path)
            pruning = nil
        }
        // Hard-pruned models get their masks back, so inference runs the sparse kernels.
        if let p = pruning, p.hardPruned {
            let params = Dictionary(uniqueKeysWithValues: model.parameters().map { ($0.name, $0) })
            for l in p.layers {
                guard let w = params[l.name], w.shape == l.shape else {
                    throw StateLoadError(path: pj, detail: "layer '\(l.name)' does not match the model")
                }
                do { try l.check(weightShape: w.shape) } catch { throw StateLoadError(path: pj, detail: "\(error)") }
                w.mask = l.mask()
                w.applyMask()
            }
        }
    }
}
