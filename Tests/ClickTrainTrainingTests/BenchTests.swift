import ClickTrainCore
import ClickTrainNN
import ClickTrainTraining
import Foundation
import Testing

/// The sparse benchmark's reporting on a small ResNet (what is printed, not how fast).
@Suite("Benchmark, pattern-sparse figures")
struct BenchTests {
    let input = ModelInput(channels: 3, size: 16, classes: 10)

    @Test func sparseBenchReportsEveryPrunedLayerAndTheAlternatedRatios() throws {
        var b = TrainingBenchmark(modelName: "resnet20", batch: 4, input: input)
        b.warmup = 1
        b.runs = 3
        b.sparseCompression = 8
        let r = try b.run()
        func positive(_ v: Double?) -> Bool { v.map { $0.isFinite && $0 > 0 } ?? false }
        #expect(positive(r.sparse_infer_ms_per_batch) && positive(r.sparse_train_ms_per_step))
        #expect(positive(r.sparse_train_speedup_alternated) && positive(r.sparse_infer_speedup_alternated))
        #expect(positive(r.conv_compression))
        // ResNet-20: 18 pruned 3x3 convs in the stages (the stem and the shortcuts stay dense).
        let layers = try #require(r.sparse_kernel_layers)
        #expect(layers.count == 18)
        #expect(Set(layers.map(\.layer)).count == 18)
        for l in layers {
            #expect(l.kept_weights > 0 && l.kept_weights < 1, "\(l.layer)")
            for v in [l.dense_forward_ms, l.sparse_forward_ms, l.dense_weight_grad_ms, l.sparse_input_grad_ms,
                      l.sparse_weight_grad_ms, l.forward_speedup_alternated, l.weight_grad_speedup_alternated] {
                #expect(positive(v), "\(l.layer)")
            }
            // oneDNN's input gradient is a difference of two timings: never negative.
            #expect(l.dense_input_grad_ms >= 0 && l.input_grad_speedup_alternated >= 0, "\(l.layer)")
        }
        #expect(layers.contains { $0.geometry.hasSuffix("s2") })
    }

    /// `--compare-layouts`: both alternated ratios reported, and only with the flag.
    @Test func layoutComparisonReportsBothRatios() throws {
        var b = TrainingBenchmark(modelName: "resnet20", batch: 4, input: input)
        b.warmup = 1
        b.runs = 3
        #expect(try b.run().blocked_train_speedup_alternated == nil)
        b.compareLayouts = true
        let r = try b.run()
        for v in [r.blocked_train_speedup_alternated, r.blocked_infer_speedup_alternated] {
            #expect(v.map { $0.isFinite && $0 > 0 } ?? false)
        }
    }

    /// `--breakdown`: the kinds of work of a ResNet step, which add up to the mean step.
    @Test func breakdownSplitsTheStepByKindOfWork() throws {
        var b = TrainingBenchmark(modelName: "resnet20", batch: 4, input: input)
        b.warmup = 1
        b.runs = 3
        b.breakdown = true
        let r = try b.run()
        let parts = try #require(r.breakdown_ms)
        #expect(Set(parts.keys) == Set(WorkProfile.Kind.allCases.map(\.rawValue) + ["other"]))
        for kind in ["conv_forward", "conv_backward", "batch_norm", "elementwise", "pooling", "linear", "loss", "optimizer"] {
            #expect((parts[kind] ?? 0) > 0, "\(kind)")
        }
        // The parts are measured inside the step: together at most the mean step, and the
        // convolutions and batch norm most of it.
        let total = parts.values.reduce(0, +), measured = total - parts["other"]!
        #expect(measured <= total + 1e-9 && measured > 0.5 * total, "\(parts)")
        #expect(WorkProfile.current == nil)
        #expect(try b.run().breakdown_ms != nil)
        #expect(r.sparse_breakdown_ms == nil)
        b.breakdown = false
        #expect(try b.run().breakdown_ms == nil)
    }

    /// `--breakdown --sparse`: the step after hard pruning split the same way, its
    /// convolutions on the pattern kernels timed as conv work.
    @Test func breakdownOfThePrunedStep() throws {
        var b = TrainingBenchmark(modelName: "resnet20", batch: 4, input: input)
        b.warmup = 1
        b.runs = 3
        b.breakdown = true
        b.sparseCompression = 8
        let r = try b.run()
        let parts = try #require(r.sparse_breakdown_ms)
        #expect(Set(parts.keys) == Set(WorkProfile.Kind.allCases.map(\.rawValue) + ["other"]))
        for kind in ["conv_forward", "conv_backward", "batch_norm", "optimizer"] { #expect((parts[kind] ?? 0) > 0, "\(kind)") }
        let total = parts.values.reduce(0, +)
        #expect(total - parts["other"]! > 0.5 * total, "\(parts)")
        #expect(abs(total - r.sparse_train_ms_per_step!) < 0.5 * r.sparse_train_ms_per_step!, "mean against median step")
    }

    @Test func inferenceSessionTimesOnDemand() throws {
        var b = TrainingBenchmark(modelName: "resnet20", batch: 4, input: input)
        b.warmup = 1
        b.sparseCompression = 8
        let session = try b.sparseInferenceSession(trainSteps: 1)
        for batches in [1, 3] {
            let ms = session.medianMs(batches: batches)
            #expect(ms.isFinite && ms > 0)
        }
    }
}

/// `clicktrain bench --sparse --inference-only --serve`, the process
/// `scripts/compare-inference.py` talks to: one JSON line per request, a clear error for a
/// request that is not a batch count.
@Suite("Benchmark, serving process")
struct BenchServeTests {
    @Test func serveAnswersEachLineAndRejectsGarbage() throws {
        let exe = try #require(clicktrainExecutable(), "build the clicktrain executable first (swift build)")
        let p = Process(), input = Pipe(), output = Pipe(), errors = Pipe()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = ["bench", "--model", "resnet20", "--input", "3x16x16", "--batch", "4", "--threads", "2", "--warmup", "1",
                       "--runs", "2", "--sparse", "--inference-only", "--serve"]
        p.standardInput = input
        p.standardOutput = output
        p.standardError = errors
        try p.run()
        input.fileHandleForWriting.write(Data("3\n\nnot-a-count\n".utf8))
        try input.fileHandleForWriting.close()
        p.waitUntilExit()
        let lines = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .split(separator: "\n").map(String.init)
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(lines.first == "{\"ready\": true}")
        #expect(lines.count == 3, "\(lines)")
        for line in lines.dropFirst() {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Double]
            #expect((object?["sparse_infer_ms_per_batch"] ?? 0) > 0, "\(line)")
        }
        #expect(p.terminationStatus != 0)
        #expect(message.contains("not-a-count"), "\(message)")
    }
}
