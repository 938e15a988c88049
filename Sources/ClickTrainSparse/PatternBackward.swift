// The backward pass: per image the weight gradient (kernels in PatternWeightGradient.swift),
// then the input gradient (PatternInputGradient.swift, and the forward's gather).

import ClickTrainCore

extension PatternConvKernel {
    /// Input gradient and the gradient of the kept weights only (`gradValues`, aligned
    /// with `weights.value`), from `gradOutput`; `gradInput` nil skips the input gradient,
    /// `gradValues` nil the weight gradient.
    /// Weight gradient: dw_i = Σ_q dy[q]·x_copies[off_i + q] over the output plane, a tile
    /// of dy in registers against the kept taps' shifted inputs (at stride 1 with 16- or
    /// 32-wide outputs a kernel's vertically adjacent taps share one read). Input gradient at
    /// stride 1: the forward's gather over the output gradient's shifted copies, kernels
    /// transposed and mirrored; at stride 2 by parity plane of the input (see the type's
    /// documentation).
    package func backward(input: Tensor, weights pw: PatternWeights, gradOutput: Tensor, gradInput: Tensor?,
                         gradValues: UnsafeMutablePointer<Float>?, gradBias: Tensor?) {
        let g = geometry
        precondition(input.shape == g.inputShape && gradOutput.shape == g.outputShape, "pattern conv backward: shapes")
        let p = planFor(pw)
        let n = g.batch, c = g.inChannels, k = g.outChannels, h = g.height, w = g.width
        let oh = g.outHeight, ow = g.outWidth
        let pitch = self.pitch, margin = self.margin
        let nv = pw.value.count
        let chunkCount = chunks
        let gstride = gridStride, sh = shifted, outSize = sh.positions, planeStride = self.planeStride
        let gridded = phases > 1 && gradInput != nil
        // Per chunk, at stride 2: the input gradient's parity planes, and the output gradients
        // of one image as shifted copies (`dyShifted`; not in the input copies' buffer, whose
        // zeros the stride-2 layout keeps) or, for odd sizes, on the plane grid (zero margins
        // and pad columns, never written). Per-tap partial weight gradients of `weightLanes` lanes.
        if backwardBuffers == nil || backwardBuffers!.dw[0].count < max(nv, 1) * weightLanes || (gridded && backwardBuffers!.grid.isEmpty) {
            let gridFloats = dyShifted.map { k * $0.channelStride } ?? k * gstride
            backwardBuffers = (gridded ? (0..<chunkCount).map { _ in Tensor(shape: [gridFloats + 16]) } : [],
                               (0..<chunkCount).map { _ in Tensor(shape: [max(nv, 1) * weightLanes]) },
                               gridded ? (0..<chunkCount).map { _ in Tensor(shape: [max((dyShifted == nil ? c : 1) * planeStride, k * tailStride)]) } : [])
        }
        let bufs = backwardBuffers!
        let xbuf = shiftedChunkBuffers(), scr = scratch.map(\.data)
        let grids = bufs.grid.map(\.data), dwps = bufs.dw.map(\.data), planeBufs = bufs.planes.map(\.data)
        let rp = rows * pitch
        let xin = input.data, dy = gradOutput.data, dx = gradInput?.data
        // The input gradient's path (`strategy`).
        let bySource = strategy.fusedStride2InputGradient && gradInput != nil
        let groupedInput = strategy.groupedInputGradient && p.tcpStart.count > 1
        // Streamed: dx by source, or the stride-1 gather's full tiles (positions a multiple of 16).
        let streamDX = gradInput != nil && streams(g.inputShape.reduce(1, *))
            && (bySource || (phases == 1 && !groupedInput && outSize % 16 == 0))
        // Weights in the input gradient's orders: the per-tap transposed weights only where a
        // per-tap input-gradient gather runs (the by-source and grouped paths read their own
        // orders or `pw.value`).
        let perTapInput = gradInput != nil && !bySource && !groupedInput
        var bWeight = [Float](repeating: 0, count: perTapInput ? p.bValueIndex.count : 0)
        var sWeight = [Float](repeating: 0, count: bySource ? p.srcValueIndex.count : 0)
        pw.value.withUnsafeBufferPointer { v in
            for i in 0..<sWeight.count where p.srcValueIndex[i] >= 0 { sWeight[i] = v[Int(p.srcValueIndex[i])] }
            for i in 0..<bWeight.count { bWeight[i] = v[Int(p.bValueIndex[i])] }
        }
        let zeros = [Float](repeating: 0, count: c * phases)  // initial values, one per gather row
        let wantWeights = gradValues != nil
        let phases = self.phases
        let tilePacked = inputGradTiles.packed, tileCount = inputGradTiles.start.count
        let wStart = sh.tileStart, wWidth = sh.tileWidth, wCount = wStart.count
        // The weight gradient's path (`strategy`; the first that runs): the plane path over
        // several images, the plane path, vertical pairs, per tap.
        let imagesPerPass = strategy.smallPlaneImagesPerPass
        let multiImage = wantWeights && imagesPerPass > 1 && p.cpStart.count > 1
        let planeGrouped = strategy.planeWeightGradient && p.cpStart.count > 1
        let paired = strategy.pairedWeightGradient
        let imageFloats = c * sh.channelStride
        if multiImage && (multiImageBuffers.isEmpty || multiImageBuffers[0].count < imagesPerPass * imageFloats + 16) {
            multiImageBuffers = (0..<chunkCount).map { _ in Tensor(shape: [imagesPerPass * imageFloats + 16]) }
        }
        let multiBufs = multiImageBuffers.map(\.data)
        p.cpOffset.withUnsafeBufferPointer { cpo in
        p.cpStart.withUnsafeBufferPointer { cps in
        p.cpFilter.withUnsafeBufferPointer { cpf in
        p.cpSlot.withUnsafeBufferPointer { cpk in
        let (cpo, cps, cpf, cpk) = (cpo.baseAddress, cps.baseAddress!, cpf.baseAddress, cpk.baseAddress)
        p.fTaps.withUnsafeBufferPointer { ft in
        p.sOffset.withUnsafeBufferPointer { soff in
        p.tOffset.withUnsafeBufferPointer { toff in
        p.bTaps.withUnsafeBufferPointer { bt in
        p.bOffset.withUnsafeBufferPointer { boff in
        zeros.withUnsafeBufferPointer { zeros in
        bWeight.withUnsafeBufferPointer { bw in
        tilePacked.withUnsafeBufferPointer { tinfo in
        wStart.withUnsafeBufferPointer { wStart in
        wWidth.withUnsafeBufferPointer { wWidth in
        p.srcStart.withUnsafeBufferPointer { sst in
        p.tcpOffset.withUnsafeBufferPointer { tco in
        p.tcpStart.withUnsafeBufferPointer { tcs in
        p.tcpChannel.withUnsafeBufferPointer { tcc in
        p.tcpSlot.withUnsafeBufferPointer { tck in
        pw.value.withUnsafeBufferPointer { values in
        p.pairStart.withUnsafeBufferPointer { pst in
        p.pairOffset.withUnsafeBufferPointer { pof in
        p.pairSlot.withUnsafeBufferPointer { psl in
        p.singleStart.withUnsafeBufferPointer { sst1 in
        p.singleOffset.withUnsafeBufferPointer { sof1 in
        p.singleSlot.withUnsafeBufferPointer { ssl in
        let (pst, pof, psl) = (pst.baseAddress!, pof.baseAddress ?? pst.baseAddress!, psl.baseAddress ?? pst.baseAddress!)
        let (sst1, sof1, ssl) = (sst1.baseAddress!, sof1.baseAddress ?? sst1.baseAddress!, ssl.baseAddress ?? sst1.baseAddress!)
        p.srcRead.withUnsafeBufferPointer { srd in
        p.srcTail.withUnsafeBufferPointer { stl in
        sWeight.withUnsafeBufferPointer { swt in
            let tinfo = tinfo.baseAddress!, wStart = wStart.baseAddress!, wWidth = wWidth.baseAddress!
            let ft = ft.baseAddress!, soff = soff.baseAddress!, bt = bt.baseAddress!, boff = boff.baseAddress
            let bw = bw.baseAddress
            // (Empty arrays have no base address; a row with no taps never reads them.)
            let transposed = GatherRows(taps: bt, offset: toff.baseAddress ?? bt, weight: bw ?? zeros.baseAddress!,
                                        initial: zeros.baseAddress!)
            Threads.parallelFor(chunkCount) { chunk in
                let xp = xbuf[chunk], dwv = dwps[chunk], tile = scr[chunk]
                dwv.update(repeating: 0, count: max(nv, 1) * weightLanes)
                for b in (n * chunk / chunkCount)..<(n * (chunk + 1) / chunkCount) {
                    // Weight gradient of the kept taps, tile by tile over the output plane.
                    if wantWeights && multiImage {
                        let first = n * chunk / chunkCount, last = n * (chunk + 1) / chunkCount
                        if (b - first) % imagesPerPass == 0 {
                            let nb = min(imagesPerPass, last - b), mb = multiBufs[chunk]
                            for i in 0..<nb {
                                sh.fill(xin + (b + i) * c * h * w, into: mb + i * imageFloats, channels: c, height: h, width: w,
                                        used: p.usedCopies)
                            }
                            weightGradPlane(dwv, UnsafePointer(dy + b * k * outSize), UnsafePointer(mb), cpo!, cps, cpf!, cpk!,
                                            groups: p.cpStart.count - 1, positions: outSize, images: nb,
                                            xImage: 4 * imageFloats, yImage: 4 * k * outSize)
                        }
                    } else if wantWeights && planeGrouped {
                        sh.fill(xin + b * c * h * w, into: xp, channels: c, height: h, width: w, used: p.usedCopies)
                        weightGradPlane(dwv, UnsafePointer(dy + b * k * outSize), UnsafePointer(xp), cpo!, cps, cpf!, cpk!,
                                        groups: p.cpStart.count - 1, positions: outSize)
                    } else if wantWeights && paired {
                        sh.fill(xin + b * c * h * w, into: xp, channels: c, height: h, width: w, used: p.usedCopies)
                        for f in 0..<k {
                            let d = UnsafePointer(dy + (b * k + f) * outSize)
                            var q = 0
                            while q < outSize {
                                weightPairTile(dwv, d + q, UnsafePointer(xp + q), vectorsPerRow: ow / 16, pst[f], pst[f + 1],
                                               pof, psl, sst1[f], sst1[f + 1], sof1, ssl)
                                q += 128
                            }
                        }
                    } else if wantWeights {
                        sh.fill(xin + b * c * h * w, into: xp, channels: c, height: h, width: w, used: p.usedCopies)
                        for f in 0..<k {
                            let i0 = Int(ft[f]), i1 = Int(ft[f + 1])
                            if i0 == i1 { continue }
                            let d = UnsafePointer(dy + (b * k + f) * outSize)
                            for ti in 0..<wCount {
                                let q = wStart[ti], width = wWidth[ti]
                                var src = d + q
                                if q + width > outSize {
                                    // The plane's last partial tile, zero-padded.
                                    tile.update(repeating: 0, count: width)
                                    tile.update(from: src, count: outSize - q)
                                    src = UnsafePointer(tile)
                                }
                                weightTile(width, dwv, src, xp + q, i0, i1, soff)
                            }
                        }
                    }
                    guard let dx else { continue }
                    let dxb = dx + b * c * h * w
                    if phases == 1 {
                        // The output gradient's shifted copies (same plane size at stride 1).
                        sh.fill(dy + b * k * outSize, into: xp, channels: k, height: h, width: w, used: p.tUsedCopies)
                        if groupedInput {
                            dxb.update(repeating: 0, count: c * outSize)
                            forwardGrouped(dxb, UnsafePointer(xp), tco.baseAddress!, tcs.baseAddress!, tcc.baseAddress!,
                                           tck.baseAddress!, values.baseAddress!, groups: p.tcpStart.count - 1)
                            continue
                        }
                        gatherImage(sh, UnsafePointer(xp), transposed, count: c, into: dxb, scratch: tile, relu: false,
                                    residual: nil, stream: streamDX)
                        continue
                    }
                    if let ds = dyShifted {
                        let dyb = dy + b * k * outSize, dyp = grids[chunk]
                        if bySource {
                            // Each filter's last 64 positions before the tail buffer's zeros; the
                            // kx = 2 copy for the v = 1 classes.
                            let tail = planeBufs[chunk], ts = tailStride
                            for f in 0..<k { (tail + f * ts).update(from: dyb + f * outSize + outSize - 64, count: 64) }
                            ds.fill(dyb, into: dyp, channels: k, height: oh, width: ow, used: 1 << ds.copy(ofTap: 5))
                            stride2InputGradient(dxb, UnsafePointer(dyb), UnsafePointer(tail), UnsafePointer(dyp), sst.baseAddress!,
                                                 srd.baseAddress!, stl.baseAddress!, swt.baseAddress!, channels: c,
                                                 rows: oh, width: ow, streaming: streamDX)
                            continue
                        }
                        // Other even sizes: the four parity planes of each input channel as rows
                        // of a stride-1 gather over the output gradient's copies (kx = 1, 2), one
                        // channel at a time, interleaved into dx while they are in L1.
                        let pl = UnsafePointer(planeBufs[chunk])
                        ds.fill(dyb, into: dyp, channels: k, height: oh, width: ow, used: p.tUsedCopies)
                        // Row y = 2i + a of dx: even columns from plane (a, 0), odd from (a, 1).
                        let size = oh * ow
                        for ci in 0..<c {
                            gatherImage(ds, UnsafePointer(dyp), transposed.from(row: 4 * ci), count: 4,
                                        into: planeBufs[chunk], scratch: tile, relu: false, residual: nil)
                            let d = dxb + ci * h * w
                            if ow % 8 == 0 {
                                interleavePlanes(pl, into: d, rows: oh, width: ow)
                                continue
                            }
                            for y in 0..<h {
                                let a = y & 1, i = y >> 1
                                interleave(pl + 2 * a * size + i * ow, pl + (2 * a + 1) * size + i * ow, into: d + y * w, count: w)
                            }
                        }
                        continue
                    }
                    let gr = grids[chunk]
                    for f in 0..<k {
                        let d = gr + f * gstride + margin, s = dy + (b * k + f) * oh * ow
                        for oy in 0..<oh { (d + oy * pitch).update(from: s + oy * ow, count: ow) }
                    }
                    // Input gradient: tiles over each input channel's parity planes.
                    let gbase = UnsafePointer(gr + margin)
                    let planes = planeBufs[chunk]
                    for ti in 0..<tileCount {
                        let e = tinfo + 3 * ti
                        let t = e[0], width = e[1], ph = e[2]
                        for ci in 0..<c {
                            let row = ci * phases + ph
                            gatherTile(width, planes + ci * planeStride + t, 0, gbase + t, Int(bt[row]), Int(bt[row + 1]),
                                       boff!, bw!)
                        }
                    }
                    // Interleave the planes into dx: row y = 2i + py − 1 takes its even
                    // columns 2j from plane (py, 1) at (i, j), its odd ones 2j + 1 from plane
                    // (py, 0) at (i, j + 1).
                    for ci in 0..<c {
                        let pl = UnsafePointer(planes + ci * planeStride), d = dxb + ci * h * w
                        for y in 0..<h {
                            let py = (y + 1) & 1, i = (y + 1) >> 1
                            interleave(pl + (2 * py + 1) * rp + i * pitch, pl + 2 * py * rp + i * pitch + 1, into: d + y * w,
                                       count: w)
                        }
                    }
                }
                if streamDX { streamFence() }
            }
        } } } } } } } } } } } } } } } } } } } } } } } } } } } } }
        // Sum the per-thread partial weight gradients in a fixed order: threads lane-wise,
        // then the lanes, the taps split over the threads.
        if let gradValues {
            dwps.withUnsafeBufferPointer { parts in
                let parts = parts.baseAddress!
                Threads.parallelRanges(nv, minPerChunk: 256) { taps in
                    for i in taps { gradValues[i] = sumPartials(parts, chunkCount, i) }
                }
            }
        }
        if let db = gradBias {
            for f in 0..<k {
                var sum: Float = 0
                for b in 0..<n { sum += vectorSum(dy + (b * k + f) * oh * ow, oh * ow) }
                db[f] = sum
            }
        }
    }
}
