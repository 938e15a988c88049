import ClickTrainCore
import ClickTrainData
import ClickTrainTestSupport
import ClickTrainTraining
import Foundation
import Testing

/// `model.pattern.safetensors` of a ClickTrain run: the same weights and masks as
/// `model.safetensors` with `pruning.json`, the same accuracy, a much smaller file, and
/// NumPy alone turns it back into the dense file.
@Suite("Compact pattern files")
struct PatternFileTests {
    @Test func roundTripSizeAndAccuracy() throws {
        var (cfg, dir) = shortResNetRun(epochs: 2, method: .clicktrain)
        cfg.epoch_choose_p_k = 1
        cfg.epoch_hard_prune_p_k = 1
        try quiet(Trainer(config: cfg, runDir: dir)).run()
        let dense = try SavedModel(path: dir + "/model.safetensors")
        let compact = try SavedModel(path: dir + "/model.pattern.safetensors")
        #expect(compact.name == dense.name && compact.input == dense.input && compact.dataset == dense.dataset)
        for (a, b) in zip(dense.model.parameters(), compact.model.parameters()) {
            #expect(a.name == b.name && a.value.array == b.value.array, "\(a.name)")
            #expect(a.mask?.array == b.mask?.array, "\(a.name) mask")
        }
        let (dp, cp) = (try #require(dense.pruning), try #require(compact.pruning))
        #expect(dp.layers.map(\.name) == cp.layers.map(\.name)
            && dp.layers.map { $0.mask().array } == cp.layers.map { $0.mask().array })
        let size = { (f: String) in (try FileManager.default.attributesOfItem(atPath: dir + "/" + f)[.size] as? Int) ?? 0 }
        let ratio = Double(try size("model.safetensors")) / Double(try size("model.pattern.safetensors"))
        #expect(ratio >= 4.5, "the pattern file is only \(ratio)x smaller")
        let test = try ImageDataset.load(.fashionMNIST, directory: cfg.data, train: false)
        let norm = DatasetKind.fashionMNIST.normalization
        let aug = Augmentation(mean: norm.mean, std: norm.std)
        let accDense = Trainer.evaluate(model: dense.model, dataset: test, batchSize: 32, augmentation: aug)
        let accCompact = Trainer.evaluate(model: compact.model, dataset: test, batchSize: 32, augmentation: aug)
        #expect(accDense.accuracy == accCompact.accuracy && accDense.loss == accCompact.loss)

        // scripts/expand-pattern-file.py (NumPy only) gives back model.safetensors' tensors.
        guard pythonChecksRun else { return }
        let r = runPython(["scripts/expand-pattern-file.py", dir + "/model.pattern.safetensors",
                           dir + "/expanded.safetensors", "--compare", dir + "/model.safetensors"])
        #expect(r.status == 0, "\(r.output)")
        #expect(try SavedModel(path: dir + "/expanded.safetensors").model.parameters().map { $0.value.array }
            == dense.model.parameters().map { $0.value.array })
    }

    /// A damaged pattern file is a clear error, never a crash.
    @Test func inconsistentFilesAreErrors() throws {
        var (cfg, dir) = shortResNetRun(epochs: 1, method: .pat)
        cfg.epoch_choose_p_k = 0
        cfg.epoch_hard_prune_p_k = 0
        try quiet(Trainer(config: cfg, runDir: dir)).run()
        let st = try SafeTensors.read(dir + "/model.pattern.safetensors")
        let name = "layer2.1.conv1.weight"
        for (key, value) in [(name + ".values", SafeTensors.Value.f32(shape: [3], values: [1, 2, 3])),
                             (name + ".patterns", .u8(shape: [1], values: [200]))] {
            var t = st.tensors
            t[key] = value
            let path = SyntheticData.temporaryDirectory("bad") + ".safetensors"
            try SafeTensors.write(st.order.map { ($0, t[$0]!) }, metadata: st.metadata, to: path)
            #expect { try SavedModel(path: path) } throws: { "\($0)".contains(name) }
        }
    }
}
