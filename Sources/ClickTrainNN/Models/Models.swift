import ClickTrainCore

/// What a model is built for: input channels, square image size, classes.
public struct ModelInput: Sendable, Equatable {
    public var channels: Int
    public var size: Int
    public var classes: Int
    public init(channels: Int, size: Int, classes: Int) {
        self.channels = channels
        self.size = size
        self.classes = classes
    }
    public static let fashionMNIST = ModelInput(channels: 1, size: 28, classes: 10)
    public static let cifar10 = ModelInput(channels: 3, size: 32, classes: 10)
}

/// An unknown model name, with the list of known ones.
/// A model asked for an input it cannot take (no channels or classes, images too small).
public struct ModelInputError: Error, CustomStringConvertible {
    public let model: String
    public let input: ModelInput
    public let minimumSize: Int
    public var description: String {
        "\(model) cannot take \(input.channels)x\(input.size)x\(input.size) images with \(input.classes) classes: "
            + "it needs at least 1 channel, 1 class and images of at least \(minimumSize)x\(minimumSize)"
    }
}

/// A model name the model zoo does not have; the message lists the names it has.
public struct UnknownModelError: Error, CustomStringConvertible {
    public let name: String
    public init(name: String) { self.name = name }
    public var description: String {
        "unknown model '\(name)'; known models: \(ModelZoo.names.joined(separator: ", "))"
    }
}

/// Builds the model zoo's networks by name. Parameters get PyTorch `state_dict` names.
public enum ModelZoo {
    public static let names = ["lenet5", "resnet20", "resnet32", "resnet56", "resnet110", "vgg11", "vgg13", "vgg16",
                               "resnet18", "resnet50"]

    /// Accepts `resnet20`, `ResNet-20`, `resnet_20`, `vgg11_bn`….
    public static func canonicalName(_ name: String) -> String {
        var n = name.lowercased().replacingOccurrences(of: "-", with: "").replacingOccurrences(of: "_", with: "")
        if n.hasSuffix("bn") && n.hasPrefix("vgg") { n.removeLast(2) }
        if n == "lenet" { n = "lenet5" }
        return n
    }

    /// The smallest square image a model takes (its pooling and strides leave at least one
    /// pixel), or nil for an unknown name.
    public static func minimumImageSize(_ name: String) -> Int? {
        switch canonicalName(name) {
        case "lenet5": return 12
        case let n where names.contains(n): return 1  // padding keeps every map at least 1x1
        default: return nil
        }
    }

    /// Builds a model by name; throws for an unknown name or an input it cannot take.
    public static func make(_ name: String, input: ModelInput, seed: UInt64) throws -> Sequential {
        guard let minSize = minimumImageSize(name) else { throw UnknownModelError(name: name) }
        guard input.channels >= 1, input.classes >= 1, input.size >= minSize else {
            throw ModelInputError(model: canonicalName(name), input: input, minimumSize: minSize)
        }
        var rng = RNG(seed: seed, stream: 0x30DE1)
        let model: Sequential
        switch canonicalName(name) {
        case "lenet5": model = lenet5(input, rng: &rng)
        case "resnet20": model = cifarResNet(depth: 20, input, rng: &rng)
        case "resnet32": model = cifarResNet(depth: 32, input, rng: &rng)
        case "resnet56": model = cifarResNet(depth: 56, input, rng: &rng)
        case "resnet110": model = cifarResNet(depth: 110, input, rng: &rng)
        case "vgg11": model = vgg([64, -1, 128, -1, 256, 256, -1, 512, 512, -1, 512, 512, -1], input, rng: &rng)
        case "vgg13": model = vgg([64, 64, -1, 128, 128, -1, 256, 256, -1, 512, 512, -1, 512, 512, -1], input, rng: &rng)
        case "vgg16":
            model = vgg([64, 64, -1, 128, 128, -1, 256, 256, 256, -1, 512, 512, 512, -1, 512, 512, 512, -1],
                        input, rng: &rng)
        case "resnet18": model = imagenetResNet(blocks: [2, 2, 2, 2], bottleneck: false, input, rng: &rng)
        case "resnet50": model = imagenetResNet(blocks: [3, 4, 6, 3], bottleneck: true, input, rng: &rng)
        default: throw UnknownModelError(name: name)
        }
        model.assignNames()
        if let first = model.layers.first?.1 { first.needsInputGradient = false }
        return model
    }

    /// LeNet-5: conv5(6, pad 2) → pool → conv5(16) → pool → 120 → 84 → classes.
    static func lenet5(_ inp: ModelInput, rng: inout RNG) -> Sequential {
        let s1 = inp.size / 2, s2 = (s1 - 4) / 2
        precondition(s2 >= 1, "LeNet-5 needs images of at least 12x12, got \(inp.size)")
        return Sequential([
            ("conv1", Conv2d(inp.channels, 6, kernelSize: 5, padding: 2, bias: true, rng: &rng)), ("relu1", ReLU()),
            ("pool1", MaxPool2d(kernelSize: 2)),
            ("conv2", Conv2d(6, 16, kernelSize: 5, bias: true, rng: &rng)), ("relu2", ReLU()),
            ("pool2", MaxPool2d(kernelSize: 2)), ("flatten", Flatten()),
            ("fc1", Linear(16 * s2 * s2, 120, rng: &rng)), ("relu3", ReLU()),
            ("fc2", Linear(120, 84, rng: &rng)), ("relu4", ReLU()),
            ("fc3", Linear(84, inp.classes, rng: &rng)),
        ])
    }

    /// CIFAR ResNet (He et al. 2016, §4.2) with option-B (projection) shortcuts:
    /// 16/32/64 channels, (depth-2)/6 basic blocks per stage.
    static func cifarResNet(depth: Int, _ inp: ModelInput, rng: inout RNG) -> Sequential {
        precondition((depth - 2) % 6 == 0, "CIFAR ResNet depth must be 6n+2, got \(depth)")
        let n = (depth - 2) / 6
        var layers: [(String, any Layer)] = [
            ("conv1", Conv2d(inp.channels, 16, kernelSize: 3, padding: 1, rng: &rng)), ("bn1", BatchNorm2d(16)),
            ("relu", ReLU()),
        ]
        var inC = 16
        for (stage, width) in [16, 32, 64].enumerated() {
            var blocks: [any Layer] = []
            for b in 0..<n {
                let stride = (stage > 0 && b == 0) ? 2 : 1
                blocks.append(BasicBlock(inC, width, stride: stride, rng: &rng))
                inC = width
            }
            layers.append(("layer\(stage + 1)", Sequential(indexed: blocks)))
        }
        layers += [("avgpool", GlobalAvgPool()), ("fc", Linear(64, inp.classes, rng: &rng))]
        return Sequential(layers)
    }

    /// VGG with batch norm for small images (`features` as torchvision, one linear
    /// `classifier`). A max-pool is skipped once the feature map is 1x1, so 28x28 works.
    static func vgg(_ cfg: [Int], _ inp: ModelInput, rng: inout RNG) -> Sequential {
        var feats: [any Layer] = []
        var c = inp.channels, s = inp.size
        for v in cfg {
            if v < 0 {
                if s >= 2 { feats.append(MaxPool2d(kernelSize: 2)); s /= 2 }
            } else {
                feats += [Conv2d(c, v, kernelSize: 3, padding: 1, bias: true, rng: &rng), BatchNorm2d(v), ReLU()]
                c = v
            }
        }
        return Sequential([
            ("features", Sequential(indexed: feats)), ("flatten", Flatten()),
            ("classifier", Linear(c * s * s, inp.classes, rng: &rng)),
        ])
    }

    /// ImageNet-style ResNet-18/50 (torchvision layout: 7x7/2 stem, 3x3/2 max-pool,
    /// `downsample` shortcuts), for any input size ≥ 32.
    static func imagenetResNet(blocks: [Int], bottleneck: Bool, _ inp: ModelInput, rng: inout RNG) -> Sequential {
        var layers: [(String, any Layer)] = [
            ("conv1", Conv2d(inp.channels, 64, kernelSize: 7, stride: 2, padding: 3, rng: &rng)),
            ("bn1", BatchNorm2d(64)), ("relu", ReLU()), ("maxpool", MaxPool2d(kernelSize: 3, stride: 2, padding: 1)),
        ]
        var inC = 64
        for (stage, count) in blocks.enumerated() {
            let width = 64 << stage
            var bs: [any Layer] = []
            for b in 0..<count {
                let stride = (stage > 0 && b == 0) ? 2 : 1
                if bottleneck {
                    bs.append(Bottleneck(inC, width: width, stride: stride, rng: &rng))
                    inC = width * Bottleneck.expansion
                } else {
                    bs.append(BasicBlock(inC, width, stride: stride, shortcutName: "downsample", rng: &rng))
                    inC = width
                }
            }
            layers.append(("layer\(stage + 1)", Sequential(indexed: bs)))
        }
        layers += [("avgpool", GlobalAvgPool()), ("fc", Linear(inC, inp.classes, rng: &rng))]
        return Sequential(layers)
    }
}
