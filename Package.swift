// swift-tools-version:6.0
import PackageDescription

// Our own SIMD/scalar loops need a target CPU with AVX2+FMA, or every FMA becomes a
// library call (DESIGN.md §5). haswell (AVX2 + FMA) runs on every x86 server of the last decade,
// including the GPU machine; unsafeFlags work because this is the root package.
let cpuFlags: [SwiftSetting] = [
    .unsafeFlags(["-target-cpu", "haswell"], .when(platforms: [.linux])),
]

let package = Package(
    name: "ClickTrain",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "clicktrain", targets: ["clicktrain"]),
        .library(name: "ClickTrainCore", targets: ["ClickTrainCore"]),
        .library(name: "ClickTrainSparse", targets: ["ClickTrainSparse"]),
        .library(name: "ClickTrainNN", targets: ["ClickTrainNN"]),
        .library(name: "ClickTrainPruning", targets: ["ClickTrainPruning"]),
        .library(name: "ClickTrainData", targets: ["ClickTrainData"]),
        .library(name: "ClickTrainTraining", targets: ["ClickTrainTraining"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
    ],
    targets: [
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CDNNL", path: "Sources/CDNNL", providers: [.apt(["libdnnl-dev"])]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", providers: [.apt(["zlib1g-dev"])]),
        .target(name: "ClickTrainCore", dependencies: ["CBLAS", "CDNNL"], swiftSettings: cpuFlags),
        .target(name: "ClickTrainSparse", dependencies: ["ClickTrainCore"], swiftSettings: cpuFlags),
        .target(name: "ClickTrainNN", dependencies: ["ClickTrainCore", "ClickTrainSparse"], swiftSettings: cpuFlags),
        .target(name: "ClickTrainData", dependencies: ["ClickTrainCore", "CZlib"], swiftSettings: cpuFlags),
        .target(name: "ClickTrainPruning", dependencies: ["ClickTrainCore", "ClickTrainNN"], swiftSettings: cpuFlags),
        .target(
            name: "ClickTrainTraining",
            dependencies: ["ClickTrainCore", "ClickTrainSparse", "ClickTrainNN", "ClickTrainPruning", "ClickTrainData",
                           .product(name: "Yams", package: "Yams")],
            swiftSettings: cpuFlags),
        .executableTarget(
            name: "clicktrain",
            dependencies: [
                "ClickTrainCore", "ClickTrainSparse", "ClickTrainNN", "ClickTrainPruning", "ClickTrainData",
                "ClickTrainTraining",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: cpuFlags),
        // The generator of Sources/ClickTrainSparse/Generated (swift run generate-kernels).
        .target(name: "ClickTrainCodegen"),
        .executableTarget(name: "generate-kernels", dependencies: ["ClickTrainCodegen"]),
        .target(name: "ClickTrainTestSupport", dependencies: ["ClickTrainCore"],
                path: "Tests/ClickTrainTestSupport", swiftSettings: cpuFlags),
        .testTarget(name: "ClickTrainCoreTests", dependencies: ["ClickTrainCore", "ClickTrainTestSupport"],
                    swiftSettings: cpuFlags),
        .testTarget(name: "ClickTrainSparseTests",
                    dependencies: ["ClickTrainSparse", "ClickTrainCodegen", "ClickTrainTestSupport"],
                    swiftSettings: cpuFlags),
        .testTarget(name: "ClickTrainPruningTests", dependencies: ["ClickTrainPruning", "ClickTrainTestSupport"],
                    swiftSettings: cpuFlags),
        .testTarget(name: "ClickTrainNNTests", dependencies: ["ClickTrainNN", "ClickTrainTestSupport"],
                    swiftSettings: cpuFlags),
        .testTarget(name: "ClickTrainDataTests", dependencies: ["ClickTrainData", "ClickTrainTestSupport"],
                    swiftSettings: cpuFlags),
        .testTarget(name: "ClickTrainTrainingTests",
                    dependencies: ["ClickTrainTraining", "ClickTrainTestSupport"], swiftSettings: cpuFlags),
    ]
)
