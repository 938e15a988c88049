import ClickTrainCore
import ClickTrainData
import ClickTrainTestSupport
import ClickTrainTraining
import Foundation
import Testing

/// Files of the published ClickTrain configs' structure (`Tests/Fixtures/published-configs`):
/// sections, milestones as a string, DataParallel and VGG `feature.N` names, ratios for
/// layers the model lacks or all commented out, data set and model from the file name.
@Suite("Published ClickTrain configs as they are")
struct PublishedConfigTests {
    static let dir = repositoryRoot.appendingPathComponent("Tests/Fixtures/published-configs").path

    func load(_ name: String) throws -> RunConfig { try RunConfig.load(yamlFile: PublishedConfigTests.dir + "/" + name) }

    @Test func sectionsFileNameAndMilestones() throws {
        let r32 = try load("cifar10_resnet32_v1.yaml")
        #expect(r32.model == "resnet32" && r32.dataset == .cifar10 && r32.method == .clicktrain && r32.published)
        #expect(r32.epochs == 190 && r32.schedule == [55, 130] && r32.lr_schedule == .step && r32.batch_size == 128)
        #expect(r32.epoch_choose_p_k == 61 && r32.epoch_hard_prune_p_k == 141 && r32.grp_lasso_coeff == 0.0005)
        #expect(r32.prune_ratios?.count == 4)
        let vgg = try load("cifar100_vgg16_v1.yaml")
        #expect(vgg.model == "vgg16" && vgg.dataset == .cifar100 && vgg.num_patterns == 8 && vgg.schedule == [60, 120, 160])
        let r56 = try load("cifar10_resnet56_v2.yaml")
        #expect(r56.model == "resnet56" && r56.prune_ratios == nil && r56.method == .clicktrain)
        let dense = try load("cifar10_resnet20_v1.yaml")
        #expect(dense.method == .dense && dense.model == "resnet20" && dense.schedule == [91, 136])
        for name in ["cifar10_resnet32_v1.yaml", "cifar100_vgg16_v1.yaml", "cifar10_resnet56_v2.yaml"] {
            let text = try String(contentsOfFile: PublishedConfigTests.dir + "/" + name, encoding: .utf8)
            #expect(RunConfig.unusedKeys(yaml: text).isEmpty, "\(name): \(RunConfig.unusedKeys(yaml: text))")
        }
    }

    /// `--epochs` scales the file's choice, hard-prune and milestone epochs.
    @Test func epochsRescaleTheSchedule() throws {
        var c = try load("cifar10_resnet32_v1.yaml")
        try c.applyCommandLine(["--epochs", "19"])
        c.rescaleSchedule(from: 190)
        #expect(c.epochs == 19 && c.epoch_choose_p_k == 6 && c.epoch_hard_prune_p_k == 14 && c.schedule == [6, 13])
        var given = try load("cifar10_resnet32_v1.yaml")
        let keys = try given.applyCommandLine(["--epochs", "19", "--hard-prune-epoch", "17"])
        given.rescaleSchedule(from: 190, except: keys)  // a flag given with the file is taken as written
        #expect(given.epoch_choose_p_k == 6 && given.epoch_hard_prune_p_k == 17)
        var flat = RunConfig()
        flat.epoch_choose_p_k = 61
        flat.epochs = 19
        flat.rescaleSchedule(from: 190)  // our own flat configs are taken as written
        #expect(flat.epoch_choose_p_k == 61)
    }

    /// A run from the published files: the model and schedule they name, ratios of absent
    /// layers skipped with one note, the VGG names mapped, a flat config.yaml written.
    @Test(arguments: ["cifar10_resnet32_v1.yaml", "cifar100_vgg16_v1.yaml", "cifar10_resnet56_v2.yaml"])
    func runStartsWithWhatTheFileNames(_ name: String) throws {
        let (tiny, dir) = tinyRun(epochs: 1)
        var c = try load(name)
        try c.applyCommandLine(["--epochs", "10", "--dataset", "fashion-mnist", "--data", tiny.data, "--batch-size", "32",
                                "--max-steps-per-epoch", "1", "--threads", "2"])
        c.rescaleSchedule(from: try load(name).epochs)
        let t = try Trainer(config: c, runDir: dir)
        var lines: [String] = []
        t.log = { lines.append($0) }
        t.showProgressBar = false
        try t.run(untilEpoch: 1)
        #expect(lines.first?.hasPrefix("training \(c.model) on fashion-mnist") == true, "\(lines)")
        let skipped = lines.filter { $0.contains("skipping prune_ratios") }
        #expect(skipped.count == (name.contains("resnet32") ? 1 : 0), "\(lines)")
        if name.contains("resnet32") { #expect(skipped.first?.contains("module.layer4.0.conv1.weight") == true) }
        let written = try RunConfig.load(yamlFile: dir + "/config.yaml")
        #expect(written.model == c.model && written.epochs == 10 && written.method == .clicktrain && !written.published)
        #expect(written.epoch_hard_prune_p_k == c.epoch_hard_prune_p_k && written.schedule == c.schedule)
        #expect(written.prune_ratios?.keys.contains { $0.contains("layer4") } != true)
        let ct = try #require(t.method(ClickTrainMethod.self))
        if name.contains("vgg16") {
            let l = try #require(ct.pruner.config.ratios["features.3.weight"])
            #expect(abs(l - 0.5) < 1e-12)
        }
    }
}
