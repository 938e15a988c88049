import ClickTrainCore
import ClickTrainData
import ClickTrainNN
import ClickTrainTestSupport
import ClickTrainTraining
import Foundation
import Testing

/// Exported models run in onnxruntime and give our logits: every model family, dense and
/// pruned to patterns, with batch-norm statistics that are not the identity.
@Suite("ONNX export checked by onnxruntime", .enabled(if: pythonChecksRun))
struct ONNXTests {
    @Test(arguments: [("lenet5", 1, 16, false), ("resnet20", 3, 16, false), ("resnet20", 3, 16, true),
                      ("vgg11", 3, 32, false), ("vgg11", 3, 32, true), ("resnet18", 3, 32, false),
                      ("resnet18", 3, 32, true), ("resnet50", 3, 32, true)])
    func logitsMatch(_ a: (String, Int, Int, Bool)) throws {
        let (name, c, size, pruned) = a
        let input = ModelInput(channels: c, size: size, classes: 10)
        let model = try ModelZoo.make(name, input: input, seed: 3)
        var rng = RNG(seed: 9)
        for (_, l) in model.namedModules() {
            guard let bn = l as? BatchNorm2d else { continue }
            for i in 0..<bn.channels {
                bn.runningMean[i] = 0.1 * rng.normal()
                bn.runningVar[i] = 0.5 + abs(rng.normal()) * 0.5
                bn.weight.value[i] = 0.75 + 0.25 * rng.normal()
                bn.bias.value[i] = 0.1 * rng.normal()
            }
        }
        // ResNet-50's 1x1 convolutions stay dense, so 8x is out of reach there.
        if pruned { _ = try applyRandomPatternMasks(model, compression: name == "resnet50" ? 1.5 : 8, seed: 4) }
        model.train(false)
        let n = 2, norm = DatasetKind.cifar10.normalization
        let x = Tensor(shape: [n, c, size, size]), xn = Tensor(shape: x.shape)
        for i in 0..<x.count {
            x[i] = Float(rng.next() % 256) / 255
            let ch = (i / (size * size)) % c
            xn[i] = (x[i] - norm.mean[ch % norm.mean.count]) / norm.std[ch % norm.std.count]
        }
        let logits = model.forward(xn).array
        let dir = SyntheticData.temporaryDirectory("onnx")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let onnx = dir + "/model.onnx"
        try ONNXExport.encode(model, input: input, normalization: norm, name: name).write(to: URL(fileURLWithPath: onnx))
        func raw(_ v: [Float], _ file: String) throws {
            try v.withUnsafeBufferPointer { Data(buffer: $0) }.write(to: URL(fileURLWithPath: dir + "/" + file))
        }
        try raw(x.array, "x.f32")
        try raw(logits, "y.f32")
        let r = runPython(["scripts/check-onnx.py", onnx, dir + "/x.f32", dir + "/y.f32", "\(n)", "\(c)", "\(size)",
                           "\(size)", "10"])
        #expect(r.status == 0, "\(name) pruned \(pruned): \(r.output)")
    }

    @Test func unknownLayersAreNamed() throws {
        final class Odd: Layer {
            var isTraining = true, needsInputGradient = true
            func forward(_ x: Tensor) -> Tensor { x }
            func backward(_ g: Tensor) -> Tensor { g }
            func outputShape(for input: [Int]) -> [Int] { input }
        }
        let model = Sequential([("odd", Odd())])
        #expect { try ONNXExport.encode(model, input: ModelInput(channels: 1, size: 4, classes: 2),
                                        normalization: ([0], [1]), name: "odd") } throws: { "\($0)".contains("'odd'") }
    }
}
