import ClickTrainCore
import ClickTrainNN
import ClickTrainPruning
import Foundation

/// `model.pattern.safetensors`: a hard-pruned model stored by its patterns, as plain
/// safetensors. Every state entry a pattern-pruned 3x3 conv weight `W` ([F, C, 3, 3]) is
/// not is stored as in `model.safetensors`. `W` itself becomes four tensors:
///
/// - `W.kept`: U8 [⌈F·C/8⌉], bit k % 8 of byte k / 8 set when kernel k = f·C + c is kept;
/// - `W.patterns`: U8 [kept kernels], each kept kernel's pattern, an index into the pool;
/// - `W.pool`: U8 [P, 9], 1 where a pattern keeps the tap (row-major 3x3);
/// - `W.values`: F32, the kept kernels' values in kernel order, each kernel's kept taps in
///   row-major order.
///
/// The metadata holds `format` (`clicktrain-pattern-1`), `layout` (this description),
/// `pattern_layers` (JSON: name → [F, C, 3, 3] and the connectivity ratio), the pruning
/// schedule (`pruning`: method, n, epochs) and the metadata of `model.safetensors`.
public enum PatternFile {
    public static let format = "clicktrain-pattern-1"
    public static let layout = "per pattern layer W: W.kept U8 bitmap of kept kernels (bit k%8 of byte k/8, k = f*C+c); W.patterns U8 pattern per kept kernel; W.pool U8 [P,9] taps per pattern; W.values F32 kept values, kernel by kernel, taps row-major"

    struct LayerInfo: Codable {
        var shape: [Int]
        var ratio: Double
    }

    struct Schedule: Codable {
        var method: String
        var n: Int
        var chooseEpoch: Int
        var hardEpoch: Int
    }

    /// The file's bytes for `model`, hard-pruned as `state` says.
    public static func encode(_ model: any Layer, state: PruningState, metadata: [String: String]) throws -> Data {
        let layers = Dictionary(uniqueKeysWithValues: state.layers.map { ($0.name, $0) })
        var tensors: [(String, SafeTensors.Value)] = []
        for (name, value) in ModelState.tensors(of: model) {
            guard let l = layers[name], case .f32(_, let w) = value else {
                tensors.append((name, value))
                continue
            }
            var bitmap = [UInt8](repeating: 0, count: (l.kernels + 7) / 8), ids: [UInt8] = [], kept: [Float] = []
            for k in 0..<l.kernels where !l.removed[k] {
                bitmap[k / 8] |= 1 << (k % 8)
                ids.append(l.patternIDs[k])
                for t in l.pool[Int(l.patternIDs[k])].positions { kept.append(w[k * 9 + t]) }
            }
            let pool = l.pool.flatMap { p in (0..<9).map { p.contains($0) ? UInt8(1) : 0 } }
            tensors += [(name + ".kept", .u8(shape: [bitmap.count], values: bitmap)),
                        (name + ".patterns", .u8(shape: [ids.count], values: ids)),
                        (name + ".pool", .u8(shape: [l.pool.count, 9], values: pool)),
                        (name + ".values", .f32(shape: [kept.count], values: kept))]
        }
        var meta = metadata
        meta["format"] = format
        meta["layout"] = layout
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        meta["pattern_layers"] = String(decoding: try enc.encode(state.layers.reduce(into: [String: LayerInfo]()) {
            $0[$1.name] = LayerInfo(shape: $1.shape, ratio: $1.ratio)
        }), as: UTF8.self)
        meta["pruning"] = String(decoding: try enc.encode(Schedule(method: state.method, n: state.n,
                                                                  chooseEpoch: state.chooseEpoch,
                                                                  hardEpoch: state.hardEpoch)), as: UTF8.self)
        return SafeTensors.encode(tensors, metadata: meta)
    }

    /// The dense `state_dict` and the pruning state a pattern file holds.
    public static func expand(_ tensors: [String: SafeTensors.Value], metadata: [String: String], path: String) throws
        -> (tensors: [String: SafeTensors.Value], pruning: PruningState)
    {
        func bad(_ d: String) -> StateLoadError { StateLoadError(path: path, detail: d) }
        guard let lj = metadata["pattern_layers"], let sj = metadata["pruning"],
              let infos = try? JSONDecoder().decode([String: LayerInfo].self, from: Data(lj.utf8)),
              let schedule = try? JSONDecoder().decode(Schedule.self, from: Data(sj.utf8)) else {
            throw bad("a pattern file needs 'pattern_layers' and 'pruning' metadata")
        }
        var out = tensors
        var layers: [PrunedLayer] = []
        for name in infos.keys.sorted() {
            let info = infos[name]!
            guard info.shape.count == 4, info.shape[2] == 3, info.shape[3] == 3, info.shape[0] > 0, info.shape[1] > 0,
                  info.shape[0] <= 1 << 22, info.shape[1] <= 1 << 22,
                  info.shape[0] * info.shape[1] <= 1 << 22 else {  // far above any model's layer
                throw bad("layer '\(name)' has shape \(info.shape), not [F, C, 3, 3]")
            }
            let kernels = info.shape[0] * info.shape[1]
            guard case .u8(_, let bitmap)? = tensors[name + ".kept"], bitmap.count == (kernels + 7) / 8,
                  case .u8(_, let ids)? = tensors[name + ".patterns"],
                  case .u8(let poolShape, let poolBits)? = tensors[name + ".pool"], poolShape.count == 2,
                  poolShape[1] == 9, poolShape[0] >= 1, poolShape[0] <= 255,
                  case .f32(_, let values)? = tensors[name + ".values"] else {
                throw bad("layer '\(name)' lacks its kept, patterns, pool or values tensor, or one is misshapen")
            }
            let pool = (0..<poolShape[0]).map { p in Pattern(positions: (0..<9).filter { poolBits[p * 9 + $0] != 0 }) }
            var removed = [Bool](repeating: true, count: kernels), patternIDs = [UInt8](repeating: 0, count: kernels)
            var w = [Float](repeating: 0, count: kernels * 9)
            var next = 0, v = 0
            for k in 0..<kernels where bitmap[k / 8] & (1 << (k % 8)) != 0 {
                guard next < ids.count, Int(ids[next]) < pool.count else {
                    throw bad("layer '\(name)': more kept kernels than patterns, or a pattern outside the pool")
                }
                removed[k] = false
                patternIDs[k] = ids[next]
                for t in pool[Int(ids[next])].positions {
                    guard v < values.count else { throw bad("layer '\(name)': fewer values than kept taps") }
                    w[k * 9 + t] = values[v]
                    v += 1
                }
                next += 1
            }
            guard next == ids.count, v == values.count else {
                throw bad("layer '\(name)': \(ids.count) patterns and \(values.count) values for \(next) kept kernels")
            }
            for suffix in [".kept", ".patterns", ".pool", ".values"] { out[name + suffix] = nil }
            out[name] = .f32(shape: info.shape, values: w)
            layers.append(PrunedLayer(name: name, shape: info.shape, ratio: info.ratio, pool: pool,
                                      patternIDs: patternIDs, removed: removed))
        }
        var state = PruningState(method: schedule.method, n: schedule.n, chooseEpoch: schedule.chooseEpoch,
                                 hardEpoch: schedule.hardEpoch)
        state.chosen = true
        state.hardPruned = true
        state.layers = layers
        return (out, state)
    }
}
