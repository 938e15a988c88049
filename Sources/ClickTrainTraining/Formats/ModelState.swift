import ClickTrainCore
import ClickTrainNN
import Foundation

/// Why a saved model does not fit the model it is loaded into.
public struct StateLoadError: Error, CustomStringConvertible {
    public let path: String
    public let detail: String
    public init(path: String, detail: String) {
        self.path = path
        self.detail = detail
    }
    public var description: String { "cannot load '\(path)': \(detail)" }
}

/// A model's parameters and buffers by their PyTorch `state_dict` names, to and from
/// safetensors: `tensors(of:)` for saving, `initialize(_:from:)` and `load` for loading.
public enum ModelState {
    /// The model's `state_dict` as safetensors values (PyTorch names, shapes and dtypes:
    /// `num_batches_tracked` is int64).
    public static func tensors(of model: any Layer, prefix: String = "") -> [(String, SafeTensors.Value)] {
        model.stateDict().map { name, entry in
            switch entry {
            case .parameter(let p): return (prefix + name, .f32(shape: p.shape, values: p.value.array))
            case .buffer(let t): return (prefix + name, .f32(shape: t.shape, values: t.array))
            case .counter(let c): return (prefix + name, .i64(shape: [], values: [c.value]))
            }
        }
    }

    /// Starting weights for a new run from a `state_dict` file with PyTorch names (ours, or
    /// one saved by PyTorch for the same architecture; a DataParallel `module.` prefix is
    /// dropped). A classifier head whose class count differs is left as initialised, and
    /// said so in the returned notes; any other missing, extra or misshapen tensor is an
    /// error naming it.
    public static func initialize(_ model: any Layer, from path: String) throws -> [String] {
        var saved = try SafeTensors.read(path).tensors
        if !saved.isEmpty, saved.keys.allSatisfy({ $0.hasPrefix("module.") }) {
            saved = Dictionary(uniqueKeysWithValues: saved.map { (String($0.key.dropFirst(7)), $0.value) })
        }
        var skip = Set<String>(), notes: [String] = []
        if let (name, head) = model.namedModules().last(where: { $0.1 is Linear }), let fc = head as? Linear,
           case .f32(let shape, _)? = saved[name + ".weight"], shape.count == 2, shape[1] == fc.inFeatures,
           shape[0] != fc.outFeatures {
            skip = [name + ".weight", name + ".bias"]
            saved[name + ".weight"] = nil
            saved[name + ".bias"] = nil
            notes.append("\(path): '\(name)' has \(shape[0]) classes there and \(fc.outFeatures) here: it starts freshly initialised")
        }
        try load(saved, into: model, path: path, skipping: skip)
        return notes
    }

    /// Copies saved tensors into the model. Every state entry must be present with its
    /// exact shape (except those in `skipping`); unknown names are an error too (a
    /// different architecture).
    public static func load(_ saved: [String: SafeTensors.Value], into model: any Layer, prefix: String = "",
                            path: String, allowExtra: Bool = false, skipping: Set<String> = []) throws {
        var used = Set<String>()
        for (name, entry) in model.stateDict() where !skipping.contains(prefix + name) {
            let key = prefix + name
            guard let v = saved[key] else { throw StateLoadError(path: path, detail: "tensor '\(key)' is missing") }
            used.insert(key)
            func copyF32(_ t: Tensor) throws {
                guard case .f32(let shape, let vals) = v else {
                    throw StateLoadError(path: path, detail: "tensor '\(key)' must be F32")
                }
                guard shape == t.shape || (shape.reduce(1, *) == t.count && shape.count == 0) else {
                    throw StateLoadError(path: path, detail: "tensor '\(key)' has shape \(shape), the model expects \(t.shape)")
                }
                vals.withUnsafeBufferPointer { t.data.update(from: $0.baseAddress!, count: t.count) }
            }
            switch entry {
            case .parameter(let p): try copyF32(p.value)
            case .buffer(let t): try copyF32(t)
            case .counter(let c):
                switch v {
                case .i64(_, let vals) where vals.count == 1: c.value = vals[0]
                case .f32(_, let vals) where vals.count == 1 && Int64(exactly: vals[0].rounded()) != nil:
                    c.value = Int64(exactly: vals[0].rounded())!
                default: throw StateLoadError(path: path, detail: "tensor '\(key)' must hold one integer")
                }
            }
        }
        if !allowExtra {
            let extra = saved.keys.filter { $0.hasPrefix(prefix) && !used.contains($0) }.sorted()
            if !extra.isEmpty {
                throw StateLoadError(path: path, detail: "unexpected tensors \(extra.prefix(5).joined(separator: ", "))\(extra.count > 5 ? ", …" : "") (a different model?)")
            }
        }
    }
}
