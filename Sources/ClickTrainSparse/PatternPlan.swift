// Which paths a layer runs (`PatternStrategy`, one choice per geometry) and the lists of
// one weight structure that they read (`PatternConvKernel.Plan`).

import ClickTrainCore

/// Which of `PatternConvKernel`'s paths a layer runs: one choice per geometry, made when the
/// kernel is built (`PatternConvKernel.strategy`). The grouped, plane and pair paths run on
/// AVX-512 builds only (their loops are written for 16-lane registers), the grouped and
/// plane ones only where every kept kernel keeps 4 taps (the plan lists their groups only
/// then); elsewhere the per-tap tiles run. All paths give the same results up to the order
/// of the additions.
@_spi(Testing) public struct PatternStrategy: Equatable, Sendable {
    /// Forward of 64-position planes (8x8 outputs) by (input channel, pattern) group
    /// (`forwardGrouped`): a group's four input taps stay in registers while its kernels'
    /// output planes are updated in place, 16 multiply-adds per kernel for 4 loads and stores.
    package var groupedForward: Bool
    /// The stride-1 input gradient of the same planes by (filter, pattern) group
    /// (`forwardGrouped` over the output gradient's copies, the kernels mirrored).
    package var groupedInputGradient: Bool
    /// Weight gradient by (input channel, pattern) group over the whole plane
    /// (`weightGradPlane`) on planes of a multiple of 32 positions other than 64: up to six
    /// kernels' tap sums stay in registers for the whole plane and are written once per
    /// kernel and image instead of once per tap and tile.
    package var planeWeightGradient: Bool
    /// The same on 64-position planes over this many images per pass (their copies side by
    /// side, so that a pass is as long as on a 16x16 plane); 1: not on these planes.
    package var smallPlaneImagesPerPass: Int
    /// Stride-1 weight gradient by vertical pairs of taps (`weightPairTile`) when OW is 16 or
    /// 32 and OH·OW a multiple of 128: a kernel's taps (ky, kx) and (ky + 1, kx) read one
    /// copy OW floats apart, loaded once for both.
    package var pairedWeightGradient: Bool
    /// Stride-2 input gradient by source (`stride2InputGradient`) for even H and W, OW in
    /// {8, 16, 32, 64} and OH·OW a multiple of 64: an input channel's four parity planes in
    /// registers, each kernel's output gradient read once per shift class for all its taps
    /// in the class, the planes interleaved straight into dx. Otherwise the planes are
    /// gathered one at a time into a buffer and interleaved after.
    package var fusedStride2InputGradient: Bool
    /// Outputs of this many bytes or more (the forward's, the stride-1 gather's input
    /// gradient and the stride-2 one by source; not the 8x8 grouped paths) are written with
    /// non-temporal stores on AVX-512 x86 builds (`streamStore`): whole lines the call does
    /// not read back, so the stores neither read each line first nor displace the input
    /// being read. 0 streams always, `Int.max` never.
    package var streamingMinBytes: Int

    /// The choice for geometry `g`.
    package init(_ g: ConvGeometry) {
        let positions = g.outHeight * g.outWidth, ow = g.outWidth
        let lanes16 = weightLanes == 16
        groupedForward = lanes16 && positions == 64
        groupedInputGradient = lanes16 && positions == 64 && g.stride == 1
        planeWeightGradient = lanes16 && positions % 32 == 0 && positions != 64
        smallPlaneImagesPerPass = lanes16 && positions == 64 ? 4 : 1
        pairedWeightGradient = lanes16 && g.stride == 1 && (ow == 16 || ow == 32) && positions % 128 == 0
        fusedStride2InputGradient = g.stride == 2 && g.height % 2 == 0 && g.width % 2 == 0 && ow >= 8 && 64 % ow == 0
            && positions % 64 == 0
        streamingMinBytes = 4 << 20
    }

    /// Whether this strategy runs only paths that `choice` runs too (each path is written for
    /// the planes its choice allows).
    func onlyTurnsOff(_ choice: PatternStrategy) -> Bool {
        (!groupedForward || choice.groupedForward) && (!groupedInputGradient || choice.groupedInputGradient)
            && (!planeWeightGradient || choice.planeWeightGradient)
            && (smallPlaneImagesPerPass <= 1 || choice.smallPlaneImagesPerPass > 1)
            && (!pairedWeightGradient || choice.pairedWeightGradient)
            && (!fusedStride2InputGradient || choice.fusedStride2InputGradient)
    }

    /// Whether the plan lists (input channel, pattern) groups for one of these paths.
    var channelGroups: Bool {
        groupedForward || planeWeightGradient || smallPlaneImagesPerPass > 1
    }
}

extension PatternConvKernel {
    /// Offsets and weight order of one weight structure, all in floats from a tile's base.
    struct Plan {
        let rowStart: [Int32], channel: [Int32], tap: [UInt8], tapStart: [Int32]
        /// Forward and weight gradient: filter f's taps are fTaps[f]..<fTaps[f + 1] of
        /// `PatternWeights.value`, tap i reading the shifted input copies at sOffset[i];
        /// `usedCopies` has a bit per copy some tap reads.
        let fTaps: [Int32], sOffset: [Int32], usedCopies: Int
        /// Input gradient at stride 1, a forward pass over the output gradient's shifted
        /// copies with the kernels transposed and mirrored (tap t read as 8 − t): input
        /// channel c's taps are bTaps[c]..<bTaps[c + 1], reading at tOffset[i];
        /// `tUsedCopies` as above.
        let tOffset: [Int32], tUsedCopies: Int
        /// The grouped forward and the grouped and plane weight gradients (4-tap kernels):
        /// kernels grouped by (input channel, pattern); group g's four taps read at
        /// cpOffset[4g..<4g + 4], its kernels are cpStart[g]..<cpStart[g + 1], kernel j of
        /// filter cpFilter[j] with the values (and partial sums) of its taps at
        /// cpSlot[j]..<cpSlot[j] + 4. cpStart is [0] and the rest empty when not used.
        let cpOffset: [Int32], cpStart: [Int32], cpFilter: [Int32], cpSlot: [Int32]
        /// The grouped input gradient at stride 1 by (filter, pattern) group: group g's
        /// four taps of the output gradient's copies (mirrored) at tcpOffset[4g..<4g + 4], its
        /// kernels tcpStart[g]..<tcpStart[g + 1] writing input channel tcpChannel[j] with the
        /// values at tcpSlot[j]..<tcpSlot[j] + 4. tcpStart is [0] when not used.
        let tcpOffset: [Int32], tcpStart: [Int32], tcpChannel: [Int32], tcpSlot: [Int32]
        /// Input gradient, rows = (input channel, parity plane): row r's taps are
        /// bTaps[r]..<bTaps[r + 1], with the weight value[bValueIndex[i]], at stride 2
        /// reading the gradient grid at bOffset[i].
        let bTaps: [Int32], bOffset: [Int32], bValueIndex: [Int32]
        /// Stride-2 input gradient by source: per input channel c and shift class
        /// k = u + 2v (the output gradient read at (i + u, j + v)) the kernels j in
        /// srcStart[4c + k]..<srcStart[4c + k + 1] with the weights of the class's taps
        /// (`shiftClassTaps`) value[srcValueIndex[4j..<4j + 4]] (−1: pruned, weight 0). Kernel j
        /// reads at srcRead[j] (v = 0: the output gradient, filter·OH·OW + u·OW; v = 1: the
        /// kx = 2 copy of `dyShifted`) and for the last 64 positions at srcTail[j] (v = 0: the
        /// tail buffer, filter·tailStride + u·OW; v = 1: the copy, as srcRead).
        let srcStart: [Int32], srcValueIndex: [Int32], srcRead: [Int32], srcTail: [Int32]
        /// Weight gradient by vertical pairs (stride 1, OW = 16 or 32): filter f's taps as
        /// pairs pairStart[f]..<pairStart[f + 1] of one kernel's vertically adjacent taps (ky,
        /// kx), (ky + 1, kx) — the same copy OW floats apart, read once for both — reading at
        /// pairOffset[j], their partial sums at slots pairSlot[2j], pairSlot[2j + 1]; the other
        /// taps singleStart[f]..<singleStart[f + 1] at singleOffset[j], slot singleSlot[j].
        let pairStart: [Int32], pairOffset: [Int32], pairSlot: [Int32]
        let singleStart: [Int32], singleOffset: [Int32], singleSlot: [Int32]

        func matches(_ pw: PatternWeights) -> Bool {
            pw.rowStart == rowStart && pw.channel == channel && pw.tap == tap && pw.tapStart == tapStart
        }
    }

    /// The taps of the stride-2 input gradient's shift classes (u, v) = (0, 0), (1, 0),
    /// (0, 1), (1, 1) (index u + 2v) in the order of the kernel's weight slots: slot j of class
    /// (0, 0) writes plane j; (1, 0) planes (1, 0), (1, 1); (0, 1) planes (0, 1), (1, 1);
    /// (1, 1) plane (1, 1).
    static let shiftClassTaps: [[Int]] = [[4, 5, 7, 8], [1, 2], [3, 6], [0]]

    /// Floats per filter in the by-source input gradient's tail buffer: the plane's last 64
    /// positions, then zeros (row OH reads zero, and nothing past the output gradient is read).
    var tailStride: Int { (64 + geometry.outWidth + 16 + 15) / 16 * 16 }

    /// Whether an output of `floats` floats is streamed (`PatternStrategy.streamingMinBytes`).
    func streams(_ floats: Int) -> Bool { hasStreamingStores && 4 * floats >= strategy.streamingMinBytes }

    /// Parity plane of the input gradient a tap writes (0 for stride 1). Even planes
    /// (`dyShifted`): plane 2a + b holds (2i + a, 2j + b), which tap (ky, kx) reaches when
    /// ky ≡ a + 1 and kx ≡ b + 1 (mod 2); otherwise plane 2py + px holds (2i + py − 1, 2j + px − 1).
    func phase(ofTap t: Int) -> Int {
        if phases == 1 { return 0 }
        let (ky, kx) = (t / 3, t % 3)
        return dyShifted != nil ? ((ky + 1) & 1) * 2 + ((kx + 1) & 1) : (ky & 1) * 2 + (kx & 1)
    }

    func makePlan(_ pw: PatternWeights) -> Plan {
        let g = geometry
        precondition(pw.outChannels == g.outChannels && pw.inChannels == g.inChannels, "pattern conv: weight shape")
        let gs = Int32(gridStride)
        var fTaps: [Int32] = [0], sOffset = [Int32]()
        sOffset.reserveCapacity(pw.tap.count)
        var usedCopies = 0
        let cs = Int32(shifted.channelStride)
        var bitsOf = [UInt16](repeating: 0, count: pw.channel.count)
        for f in 0..<g.outChannels {
            for e in Int(pw.rowStart[f])..<Int(pw.rowStart[f + 1]) {
                for i in Int(pw.tapStart[e])..<Int(pw.tapStart[e + 1]) {
                    sOffset.append(pw.channel[e] * cs + Int32(shifted.tapOffsets[Int(pw.tap[i])]))
                    usedCopies |= 1 << shifted.copy(ofTap: Int(pw.tap[i]))
                    bitsOf[e] |= 1 << UInt16(pw.tap[i])
                }
            }
            fTaps.append(pw.tapStart[Int(pw.rowStart[f + 1])])
        }
        let fourTap = bitsOf.allSatisfy { $0.nonzeroBitCount == 4 }
        var cpOffset: [Int32] = [], cpStart: [Int32] = [0], cpFilter: [Int32] = [], cpSlot: [Int32] = []
        // (Input channel, pattern) groups: the grouped forward and weight gradient of
        // 64-position planes, and the plane weight gradient.
        if fourTap && strategy.channelGroups {
            var groups: [UInt32: [(Int32, Int32)]] = [:]
            for f in 0..<g.outChannels {
                for e in Int(pw.rowStart[f])..<Int(pw.rowStart[f + 1]) {
                    groups[UInt32(pw.channel[e]) << 16 | UInt32(bitsOf[e]), default: []].append((Int32(f), pw.tapStart[e]))
                }
            }
            for key in groups.keys.sorted() {
                let ch = Int32(key >> 16), bits = UInt16(key & 0xFFFF)
                for t in 0..<9 where bits & (1 << t) != 0 { cpOffset.append(ch * cs + Int32(shifted.tapOffsets[t])) }
                for (f, slot) in groups[key]! { cpFilter.append(f); cpSlot.append(slot) }
                cpStart.append(Int32(cpFilter.count))
            }
        }
        // The grouped input gradient at stride 1 by (filter, pattern) group: the group's four
        // output-gradient taps (mirrored, 8 − t, listed in the kernel's value order) in
        // registers, its kernels' input channels updated in place (`forwardGrouped`).
        var tcpOffset: [Int32] = [], tcpStart: [Int32] = [0], tcpChannel: [Int32] = [], tcpSlot: [Int32] = []
        if fourTap && strategy.groupedInputGradient {
            var groups: [UInt32: [(Int32, Int32)]] = [:]
            for f in 0..<g.outChannels {
                for e in Int(pw.rowStart[f])..<Int(pw.rowStart[f + 1]) {
                    groups[UInt32(f) << 16 | UInt32(bitsOf[e]), default: []].append((pw.channel[e], pw.tapStart[e]))
                }
            }
            for key in groups.keys.sorted() {
                let f = Int32(key >> 16), bits = UInt16(key & 0xFFFF)
                for t in 0..<9 where bits & (1 << t) != 0 { tcpOffset.append(f * cs + Int32(shifted.tapOffsets[8 - t])) }
                for (ci, slot) in groups[key]! { tcpChannel.append(ci); tcpSlot.append(slot) }
                tcpStart.append(Int32(tcpChannel.count))
            }
        }
        // Input-gradient lists: per input channel and parity plane, the taps in that plane.
        let byC = pw.byInputChannel()
        var bTaps: [Int32] = [0], bOffset: [Int32] = [], vi: [Int32] = [], tOffset: [Int32] = []
        var tUsedCopies = 0
        for c in 0..<g.inChannels {
            for ph in 0..<phases {
                for e in Int(byC.rowStart[c])..<Int(byC.rowStart[c + 1]) {
                    for i in Int(byC.tapStart[e])..<Int(byC.tapStart[e + 1]) where phase(ofTap: Int(byC.tap[i])) == ph {
                        let t = Int(byC.tap[i])
                        if phases == 1 {
                            tOffset.append(byC.filter[e] * cs + Int32(shifted.tapOffsets[8 - t]))
                            tUsedCopies |= 1 << shifted.copy(ofTap: 8 - t)
                        } else if let ds = dyShifted {
                            // Plane (a, b) reads the output gradient at (i + u, j + v),
                            // u = (a + 1 − ky) / 2: the stride-1 tap (1 + u, 1 + v) of its copies.
                            let (ky, kx) = (t / 3, t % 3), ph = phase(ofTap: t)
                            let u = (ph / 2 + 1 - ky) / 2, v = (ph % 2 + 1 - kx) / 2
                            let st = (1 + u) * 3 + 1 + v
                            tOffset.append(byC.filter[e] * Int32(ds.channelStride) + Int32(ds.tapOffsets[st]))
                            tUsedCopies |= 1 << ds.copy(ofTap: st)
                        } else {
                            bOffset.append(byC.filter[e] * gs - Int32(tapOffsets[t]))
                        }
                        vi.append(byC.valueIndex[i])
                    }
                }
                bTaps.append(Int32(vi.count))
            }
        }
        // Stride-2 input gradient by source: per input channel and shift class (u, v) of the
        // output gradient, the kernels with a tap in the class, each read once for all of the
        // class's taps (4 weight slots per kernel, −1 where the tap is pruned).
        var srcStart: [Int32] = [0], srcValue: [Int32] = [], srcRead: [Int32] = [], srcTail: [Int32] = []
        if let ds = dyShifted, strategy.fusedStride2InputGradient {
            let size = Int32(g.outHeight * g.outWidth)
            for ci in 0..<g.inChannels {
                for cls in 0..<4 {
                    let (u, v) = (cls & 1, cls >> 1)
                    let slots = PatternConvKernel.shiftClassTaps[cls]
                    for e in Int(byC.rowStart[ci])..<Int(byC.rowStart[ci + 1]) {
                        var idx: [Int32] = [-1, -1, -1, -1]
                        for i in Int(byC.tapStart[e])..<Int(byC.tapStart[e + 1]) {
                            if let j = slots.firstIndex(of: Int(byC.tap[i])) { idx[j] = byC.valueIndex[i] }
                        }
                        if idx.allSatisfy({ $0 < 0 }) { continue }
                        srcValue += idx
                        let f = byC.filter[e], d = Int32(u * g.outWidth + v)
                        if v == 1 {
                            // Column j + 1: the kx = 2 copy (zero at column OW − 1; rows OH and
                            // past the plane zero too), tail or not.
                            let at = f * Int32(ds.channelStride) + Int32(ds.tapOffsets[(1 + u) * 3 + 2])
                            srcRead.append(at); srcTail.append(at)
                        } else {
                            srcRead.append(f * size + d); srcTail.append(f * Int32(tailStride) + d)
                        }
                    }
                    srcStart.append(Int32(srcRead.count))
                }
            }
        }
        // Weight-gradient pairs of vertically adjacent taps (stride 1, OW = 16 or 32).
        var pairStart: [Int32] = [0], pairOffset: [Int32] = [], pairSlot: [Int32] = []
        var singleStart: [Int32] = [0], singleOffset: [Int32] = [], singleSlot: [Int32] = []
        if strategy.pairedWeightGradient {
            for f in 0..<g.outChannels {
                for e in Int(pw.rowStart[f])..<Int(pw.rowStart[f + 1]) {
                    var at = [Int](repeating: -1, count: 9)  // tap -> index into value
                    for i in Int(pw.tapStart[e])..<Int(pw.tapStart[e + 1]) { at[Int(pw.tap[i])] = i }
                    let base = pw.channel[e] * cs
                    for kx in 0..<3 {
                        var ky = 0
                        while ky < 3 {
                            let t = ky * 3 + kx
                            if at[t] < 0 { ky += 1; continue }
                            if ky < 2 && at[t + 3] >= 0 {
                                pairOffset.append(base + Int32(shifted.tapOffsets[t]))
                                pairSlot += [Int32(at[t]), Int32(at[t + 3])]
                                ky += 2
                            } else {
                                singleOffset.append(base + Int32(shifted.tapOffsets[t]))
                                singleSlot.append(Int32(at[t]))
                                ky += 1
                            }
                        }
                    }
                }
                pairStart.append(Int32(pairSlot.count / 2))
                singleStart.append(Int32(singleSlot.count))
            }
        }
        return Plan(rowStart: pw.rowStart, channel: pw.channel, tap: pw.tap, tapStart: pw.tapStart,
                    fTaps: fTaps, sOffset: sOffset, usedCopies: usedCopies, tOffset: tOffset, tUsedCopies: tUsedCopies,
                    cpOffset: cpOffset, cpStart: cpStart, cpFilter: cpFilter, cpSlot: cpSlot,
                    tcpOffset: tcpOffset, tcpStart: tcpStart, tcpChannel: tcpChannel, tcpSlot: tcpSlot,
                    bTaps: bTaps, bOffset: bOffset, bValueIndex: vi,
                    srcStart: srcStart, srcValueIndex: srcValue, srcRead: srcRead, srcTail: srcTail,
                    pairStart: pairStart, pairOffset: pairOffset, pairSlot: pairSlot, singleStart: singleStart,
                    singleOffset: singleOffset, singleSlot: singleSlot)
    }
}
