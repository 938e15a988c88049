import ClickTrainCore
import ClickTrainNN
import Foundation

/// A layer the ONNX exporter has no translation for.
public struct ONNXExportError: Error, CustomStringConvertible {
    public let detail: String
    public var description: String { "cannot export to ONNX: \(detail)" }
}

/// Writes a model as a self-contained ONNX file (IR 8, opset 17): input `input`, float32
/// [N, C, H, W] with pixel values in [0, 1] (the data set's normalisation is the first
/// node), output `logits` [N, classes], N dynamic. Batch norm after a convolution is folded
/// into its weights; pruned weights are written as dense tensors with their zeros.
public enum ONNXExport {
    /// The ONNX file's bytes for `model` (its running batch-norm statistics, as in eval).
    /// - Parameters:
    ///   - model: the network, in evaluation mode when written.
    ///   - input: channels, image size and classes of the model's input.
    ///   - normalization: per-channel mean and deviation of the training data.
    ///   - name: the graph's name.
    public static func encode(_ model: any Layer, input: ModelInput, normalization: (mean: [Float], std: [Float]),
                              name: String) throws -> Data {
        let g = Graph()
        let c = input.channels
        func perChannel(_ v: [Float]) -> [Float] { (0..<c).map { v[$0 % v.count] } }
        let mean = g.constant("normalize.mean", [1, c, 1, 1], perChannel(normalization.mean))
        let std = g.constant("normalize.std", [1, c, 1, 1], perChannel(normalization.std))
        let centred = g.node("Sub", ["input", mean])
        let x = g.node("Div", [centred, std])
        let y = try g.emit(model, x, name: "")
        g.nodes.append(Graph.nodeProto("Identity", [y], ["logits"], name: "logits", attributes: []))

        var graph = ProtoMessage()
        for n in g.nodes { graph.message(1, n) }
        graph.string(2, name)
        for t in g.initializers { graph.message(5, t) }
        graph.message(11, valueInfo("input", [nil, c, input.size, input.size]))
        graph.message(12, valueInfo("logits", [nil, input.classes]))

        var opset = ProtoMessage()
        opset.string(1, "")
        opset.int(2, 17)
        var m = ProtoMessage()
        m.int(1, 8)  // IR version
        m.string(2, "clicktrain")
        m.message(7, graph)
        m.message(8, opset)
        return Data(m.bytes)
    }

    /// A float32 tensor's name, type and shape; nil dimensions are the dynamic batch `N`.
    static func valueInfo(_ name: String, _ dims: [Int?]) -> ProtoMessage {
        var shape = ProtoMessage()
        for d in dims {
            var dim = ProtoMessage()
            if let d { dim.int(1, Int64(d)) } else { dim.string(2, "N") }
            shape.message(1, dim)
        }
        var tensor = ProtoMessage()
        tensor.int(1, 1)  // FLOAT
        tensor.message(2, shape)
        var type = ProtoMessage()
        type.message(1, tensor)
        var v = ProtoMessage()
        v.string(1, name)
        v.message(2, type)
        return v
    }

    /// Nodes and initializers as they are emitted, layer by layer.
    final class Graph {
        var nodes: [ProtoMessage] = []
        var initializers: [ProtoMessage] = []
        private var count = 0

        enum Attribute {
            case int(String, Int)
            case ints(String, [Int])
            case float(String, Float)
        }

        static func nodeProto(_ op: String, _ inputs: [String], _ outputs: [String], name: String,
                              attributes: [Attribute]) -> ProtoMessage {
            var n = ProtoMessage()
            for i in inputs { n.string(1, i) }
            for o in outputs { n.string(2, o) }
            n.string(3, name)
            n.string(4, op)
            for a in attributes {
                var p = ProtoMessage()
                switch a {
                case .int(let k, let v): p.string(1, k); p.int(3, Int64(v)); p.int(20, 2)
                case .ints(let k, let v): p.string(1, k); p.ints(8, v.map(Int64.init)); p.int(20, 7)
                case .float(let k, let v): p.string(1, k); p.float(2, v); p.int(20, 1)
                }
                n.message(5, p)
            }
            return n
        }

        /// Adds a node with one output and returns the output's name.
        func node(_ op: String, _ inputs: [String], _ attributes: [Attribute] = []) -> String {
            count += 1
            let out = "\(op.lowercased())_\(count)"
            nodes.append(Graph.nodeProto(op, inputs, [out], name: out, attributes: attributes))
            return out
        }

        /// Adds a float32 initializer and returns its name.
        func constant(_ name: String, _ dims: [Int], _ values: [Float]) -> String {
            var t = ProtoMessage()
            t.ints(1, dims.map(Int64.init))
            t.int(2, 1)  // FLOAT
            t.string(8, name)
            t.data(9, values.withUnsafeBufferPointer { b in
                b.flatMap { v -> [UInt8] in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
            })
            initializers.append(t)
            return name
        }

        /// The nodes of `layer` applied to `x`; returns the output's name.
        func emit(_ layer: any Layer, _ x: String, name: String) throws -> String {
            func child(_ n: String) -> String { name.isEmpty ? n : name + "." + n }
            switch layer {
            case let s as Sequential:
                var h = x, i = 0
                let kids = s.children
                while i < kids.count {
                    if let conv = kids[i].1 as? Conv2d, i + 1 < kids.count, let bn = kids[i + 1].1 as? BatchNorm2d {
                        h = convolution(conv, folding: bn, h, name: child(kids[i].0))
                        i += 2
                    } else {
                        h = try emit(kids[i].1, h, name: child(kids[i].0))
                        i += 1
                    }
                }
                return h
            case let conv as Conv2d: return convolution(conv, folding: nil, x, name: name)
            case let bn as BatchNorm2d:
                return node("BatchNormalization", [x, constant(child("weight"), [bn.channels], bn.weight.value.array),
                                                   constant(child("bias"), [bn.channels], bn.bias.value.array),
                                                   constant(child("running_mean"), [bn.channels], bn.runningMean.array),
                                                   constant(child("running_var"), [bn.channels], bn.runningVar.array)],
                            [.float("epsilon", bn.eps)])
            case is ReLU: return node("Relu", [x])
            case let p as MaxPool2d:
                return node("MaxPool", [x], [.ints("kernel_shape", [p.kernelSize, p.kernelSize]),
                                             .ints("strides", [p.stride, p.stride]),
                                             .ints("pads", [p.padding, p.padding, p.padding, p.padding])])
            case is GlobalAvgPool:  // ours gives [N, C], ONNX's [N, C, 1, 1]
                return node("Flatten", [node("GlobalAveragePool", [x])], [.int("axis", 1)])
            case is Flatten: return node("Flatten", [x], [.int("axis", 1)])
            case let fc as Linear:
                let w = constant(child("weight"), [fc.outFeatures, fc.inFeatures], fc.weight.value.array)
                let b = constant(child("bias"), [fc.outFeatures],
                                 fc.bias?.value.array ?? [Float](repeating: 0, count: fc.outFeatures))
                return node("Gemm", [x, w, b], [.int("transB", 1)])
            case let blk as BasicBlock:
                var h = node("Relu", [convolution(blk.conv1, folding: blk.bn1, x, name: child("conv1"))])
                h = convolution(blk.conv2, folding: blk.bn2, h, name: child("conv2"))
                let short = try blk.shortcut.map { try emit($0, x, name: child(blk.shortcutName)) } ?? x
                return node("Relu", [node("Add", [h, short])])
            case let blk as Bottleneck:
                var h = node("Relu", [convolution(blk.conv1, folding: blk.bn1, x, name: child("conv1"))])
                h = node("Relu", [convolution(blk.conv2, folding: blk.bn2, h, name: child("conv2"))])
                h = convolution(blk.conv3, folding: blk.bn3, h, name: child("conv3"))
                let short = try blk.downsample.map { try emit($0, x, name: child("downsample")) } ?? x
                return node("Relu", [node("Add", [h, short])])
            default:
                throw ONNXExportError(detail: "layer '\(name)' (\(type(of: layer))) has no ONNX translation")
            }
        }

        /// A Conv node; with `bn`, its inference transform folded in:
        /// W'[f] = W[f]·γ[f]/√(var[f]+ε), b'[f] = (b[f] − mean[f])·γ[f]/√(var[f]+ε) + β[f].
        func convolution(_ conv: Conv2d, folding bn: BatchNorm2d?, _ x: String, name: String) -> String {
            let k = conv.outChannels, per = conv.weight.value.count / k
            var w = conv.weight.value.array
            var b = conv.bias?.value.array ?? [Float](repeating: 0, count: k)
            if let bn {
                for f in 0..<k {
                    let s = bn.weight.value[f] / (bn.runningVar[f] + bn.eps).squareRoot()
                    for i in 0..<per { w[f * per + i] *= s }
                    b[f] = (b[f] - bn.runningMean[f]) * s + bn.bias.value[f]
                }
            }
            let wName = constant(name + ".weight", [k, conv.inChannels, conv.kernelSize, conv.kernelSize], w)
            let bName = constant(name + ".bias", [k], b)
            let p = conv.padding
            return node("Conv", [x, wName, bName], [.ints("kernel_shape", [conv.kernelSize, conv.kernelSize]),
                                                   .ints("strides", [conv.stride, conv.stride]),
                                                   .ints("pads", [p, p, p, p])])
        }
    }
}
