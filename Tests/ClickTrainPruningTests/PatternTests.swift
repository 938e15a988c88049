import ClickTrainCore
import ClickTrainNN
import ClickTrainPruning
import ClickTrainTestSupport
import Testing

/// Importance maps built by hand: each kernel's 9 scores, row-major.
func maps(_ kernels: [[Float]]) -> Tensor {
    Tensor(shape: [kernels.count, 1, 3, 3], values: kernels.flatMap { $0 })
}

@Suite("Patterns, pools, assignment, connectivity, group lasso")
struct PatternTests {
    @Test func genericPools() {
        #expect(GenericPools.corners.map(\.description) == ["xx./xx./...", ".xx/.xx/...", ".../xx./xx.", ".../.xx/.xx"])
        for pool in [GenericPools.corners, GenericPools.eight, GenericPools.twelve] {
            #expect(Set(pool).count == pool.count)
            #expect(pool.allSatisfy { $0.count == 4 && $0.contains(4) })
        }
    }

    @Test func assignmentPicksThePatternKeepingMostImportance() {
        // Kernel 0 is heavy top-left, kernel 1 bottom-right, kernel 2 top-right.
        let s = maps([
            [9, 9, 0, 9, 9, 0, 0, 0, 0],
            [0, 0, 0, 0, 1, 5, 0, 5, 5],
            [0, 3, 3, 0, 1, 3, 1, 0, 0],
        ])
        #expect(PatternSelection.assign(s.data, kernels: 3, pool: GenericPools.corners) == [0, 3, 1])
    }

    @Test func connectivityRemovesTheLeastImportantKernels() {
        let s = maps([[1, 1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0.5, 0, 0, 0, 0], [5, 0, 0, 0, 0, 0, 0, 0, 0],
                      [0, 0, 0, 0, 0.1, 0, 0, 0, 0]])
        #expect(PatternSelection.removedKernels(s.data, kernels: 4, ratio: 0.5) == [false, true, false, true])
        #expect(PatternSelection.removedKernels(s.data, kernels: 4, ratio: 0.25) == [false, false, false, true])
        #expect(PatternSelection.removedKernels(s.data, kernels: 4, ratio: 0) == [false, false, false, false])
    }

    @Test func preferredPatternsAndDynamicPool() {
        // Four kernels prefer the "plus" without the bottom (positions 1, 3, 4, 5), two
        // prefer a vertical line plus a corner (0, 1, 4, 7): the pool of 2 keeps both,
        // the pool of 1 keeps the frequent one.
        let plus: [Float] = [0, 5, 0, 5, 9, 5, 0, 1, 0]
        let line: [Float] = [4, 6, 0, 1, 9, 0, 0, 6, 0]
        let s = maps([plus, plus, plus, plus, line, line])
        #expect(PatternSelection.preferredPattern(s.data, kernel: 0, n: 4) == Pattern(positions: [1, 3, 4, 5]))
        #expect(PatternSelection.preferredPattern(s.data, kernel: 4, n: 4) == Pattern(positions: [0, 1, 4, 7]))
        let two = PatternSelection.dynamicPool([(UnsafePointer(s.data), 6)], n: 4, size: 2)
        #expect(Set(two) == [Pattern(positions: [1, 3, 4, 5]), Pattern(positions: [0, 1, 4, 7])])
        let one = PatternSelection.dynamicPool([(UnsafePointer(s.data), 6)], n: 4, size: 1)
        #expect(one == [Pattern(positions: [1, 3, 4, 5])])
    }

    @Test func greedyCoverPrefersImportanceOverFrequency() {
        // Three light kernels prefer A, one heavy kernel prefers B: with room for one
        // pattern, B keeps more total importance.
        let light: [Float] = [1, 1, 0, 1, 1, 0, 0, 0, 0]
        let heavy: [Float] = [0, 0, 0, 0, 90, 90, 0, 90, 90]
        let s = maps([light, light, light, heavy])
        let pool = PatternSelection.dynamicPool([(UnsafePointer(s.data), 4)], n: 4, size: 1)
        #expect(pool == [Pattern(positions: [4, 5, 7, 8])])
    }

    func layer(_ removed: [Bool], pattern: [UInt8]) -> PrunedLayer {
        PrunedLayer(name: "w", shape: [removed.count, 1, 3, 3], ratio: 0, pool: GenericPools.corners,
                    patternIDs: pattern, removed: removed)
    }

    @Test func masksFollowPatternsAndRemovedKernels() {
        let l = layer([false, true], pattern: [0, 3])
        #expect(l.mask().array == [1, 1, 0, 1, 1, 0, 0, 0, 0] + [Float](repeating: 0, count: 9))
        #expect(l.patternHistogram == [1, 0, 0, 0])
    }

    @Test func groupLassoGradientMatchesFiniteDifferences() {
        let w = Reference.random([3, 1, 3, 3], seed: 3)
        let l = layer([false, true, false], pattern: [1, 0, 2])
        let g = Tensor(shape: w.shape)
        GroupLasso.addGradient(weight: w.data, grad: g.data, layer: l, lambda: 0.5)
        for i in 0..<w.count {
            let num = Reference.numericGradient(w, i, h: 1e-3) { GroupLasso.penalty(weight: w.data, layer: l, lambda: 0.5) }
            #expect(abs(num - Double(g[i])) < 2e-3, "weight \(i): \(g[i]) vs \(num)")
        }
        // In-pattern weights of kept kernels get no push.
        for i in l.pool[1].positions { #expect(g[i] == 0) }
    }

    @Test func ratiosFromTargetGrowWithDepthAndHitTheTarget() throws {
        let layers = [("a", 9000), ("b", 9000), ("c", 36000)]
        let r = try PruningRatios.fromTarget(8, layers: layers, otherConvWeights: 500, n: 4)
        #expect(r["a"]! < r["b"]! && r["b"]! < r["c"]!)
        let kept = 500 + layers.reduce(0.0) { $0 + Double($1.1) * 4 / 9 * (1 - r[$1.0]!) }
        #expect(abs(54500 / kept - 8) < 1e-6)
        #expect(throws: PruningRatios.Error.self) { try PruningRatios.fromTarget(1000, layers: layers, otherConvWeights: 500, n: 4) }
    }

    @Test func officialRatiosMapModulePrefixes() throws {
        let r = try PruningRatios.fromOfficial(["module.layer1.0.conv1.weight": 55, "layer2.0.conv2.weight": 65],
                                               prunable: ["layer1.0.conv1.weight", "layer2.0.conv2.weight"])
        #expect(r == ["layer1.0.conv1.weight": 0.55, "layer2.0.conv2.weight": 0.65])
        #expect { try PruningRatios.fromOfficial(["module.conv9.weight": 5], prunable: ["x.weight"]) } throws: {
            "\($0)".contains("module.conv9.weight")
        }
    }
}

@Suite("Pattern pruner on a model")
struct PatternPrunerTests {
    /// Choice by magnitude and hard pruning, then a restore into a fresh pruner: masks come back.
    @Test func restoreReattachesMasks() throws {
        func make() throws -> PatternPruner {
            let model = try ModelZoo.make("resnet20", input: ModelInput(channels: 1, size: 8, classes: 4), seed: 1)
            let names = PatternPruner.prunableParameters(of: model).prunable.map(\.name)
            var cfg = PatternPruningConfig(chooseEpoch: 1, hardEpoch: 2,
                                           ratios: Dictionary(uniqueKeysWithValues: names.map { ($0, 0.5) }))
            cfg.method = .pat
            return try PatternPruner(model: model, config: cfg)
        }
        let pruner = try make()
        #expect(pruner.parameters.count == 18)  // 19 3x3 convs minus the first
        pruner.chooseByMagnitude()
        pruner.hardPrune()
        for (p, l) in zip(pruner.parameters, pruner.state.layers) {
            let m = l.mask()
            for i in 0..<p.value.count where m[i] == 0 { #expect(p.value[i] == 0) }
        }
        let other = try make()
        try other.restore(pruner.state, importance: nil)
        #expect(other.parameters.allSatisfy { $0.mask != nil })
        #expect(other.state == pruner.state)
    }
}

@Suite("PruneTrain channel pruning")
struct PruneTrainTests {
    @Test func removingDeadInnerChannelsKeepsTheFunctionAndShrinksTheModel() throws {
        let model = try ModelZoo.make("resnet20", input: ModelInput(channels: 1, size: 8, classes: 4), seed: 2)
        let pt = try PruneTrain(model: model, interval: 1)
        let block = try #require(model.namedModules().first { $0.0 == "layer2.1" }?.1 as? BasicBlock)
        // Channels 3 and 7 of the block's inner width are dead: conv2 no longer reads them
        // (and conv1 no longer writes them), so removing them changes nothing.
        for j in [3, 7] {
            let w1 = block.conv1.weight.value, w2 = block.conv2.weight.value
            let c1 = w1.count / 32
            for i in 0..<c1 { w1[j * c1 + i] = 0 }
            for f in 0..<32 { for t in 0..<9 { w2[(f * 32 + j) * 9 + t] = 0 } }
        }
        model.train(false)
        let x = Reference.random([2, 1, 8, 8], seed: 4)
        let before = model.forward(x).array
        let costBefore = ModelCost.measure(model, input: ModelInput(channels: 1, size: 8, classes: 4))
        let changed = pt.reconfigure(model: model, completedEpochs: 1)
        #expect(changed.keys.sorted() == ["layer2.1"])
        #expect(changed["layer2.1"] == (0..<32).filter { $0 != 3 && $0 != 7 })
        #expect(block.innerWidth == 30 && block.conv2.inChannels == 30 && block.bn1.channels == 30)
        #expect(pt.widths["layer2.1"] == 30)
        let after = model.forward(x).array
        for i in 0..<before.count { #expect(abs(before[i] - after[i]) < 1e-5) }
        let costAfter = ModelCost.measure(model, input: ModelInput(channels: 1, size: 8, classes: 4))
        // The architecture really is smaller; the zeroed weights already cost nothing before.
        #expect(costAfter.denseInferenceFLOPs < costBefore.denseInferenceFLOPs)
        #expect(costAfter.inferenceFLOPs == costBefore.inferenceFLOPs)
        #expect(model.parameters().contains { $0.name == "layer2.1.conv1.weight" && $0.shape == [30, 32, 3, 3] })
    }

    @Test func groupLassoGradientMatchesFiniteDifferences() throws {
        let model = try ModelZoo.make("resnet20", input: ModelInput(channels: 1, size: 8, classes: 4), seed: 3)
        let pt = try PruneTrain(model: model, interval: 1)
        for p in model.parameters() { p.grad.zero() }
        pt.addGradient(model: model, loss: 1)
        let lam = Double(try #require(pt.lambda))
        // λ makes the penalty a fifth of penalty + loss at the first step.
        let gl = PruneTrain.groupLasso(model)
        #expect(abs(lam * gl / (lam * gl + 1) - 0.2) < 1e-6)
        let w = model.parameters().first { $0.name == "layer1.0.conv2.weight" }!
        for i in [0, 100, 2303] {
            let num = Reference.numericGradient(w.value, i, h: 1e-3) { lam * PruneTrain.groupLasso(model) }
            #expect(abs(num - Double(w.grad[i])) < 1e-4 + 1e-2 * abs(num), "\(i): \(w.grad[i]) vs \(num)")
        }
    }
}
