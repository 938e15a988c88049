// swift-tools-version:6.0
import PackageDescription

// An application that depends on ClickTrain: a model of its own, trained dense, with
// ClickTrain and with PAT plus activation-gradient pruning, and a training loop by hand.
// `swift run -c release` here runs it on Fashion-MNIST (Debian's dataset-fashion-mnist).
let package = Package(
    name: "CustomModel",
    platforms: [.macOS(.v14)],
    dependencies: [
        // An application elsewhere names the repository's git URL and a version instead.
        .package(name: "ClickTrain", path: "../.."),
    ],
    targets: [
        .executableTarget(name: "CustomModel", dependencies: [.product(name: "ClickTrain", package: "ClickTrain")]),
    ]
)
