/** A hand-written SVG: per scenario, one bar per system; a panel for req/s and one for p99, log scales. */

export interface Bar {
  readonly system: string
  readonly value: number | undefined
}

export interface Group {
  readonly label: string
  readonly bars: ReadonlyArray<Bar>
}

export interface Panel {
  readonly title: string
  readonly unit: string
  readonly groups: ReadonlyArray<Group>
}

const colors = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#b07aa1", "#9c755f", "#bab0ac", "#edc948", "#ff9da7"]
const barWidth = 20
const groupGap = 28
const plotHeight = 260
const left = 70
const panelHeight = plotHeight + 90

const escape = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")

const format = (v: number) =>
  v >= 100 ? String(Math.round(v)) : v >= 10 ? v.toFixed(1) : v >= 1 ? v.toFixed(2) : v.toPrecision(2)

const panel = (p: Panel, systems: ReadonlyArray<string>, top: number, width: number): string => {
  const values = p.groups.flatMap((g) => g.bars.map((b) => b.value ?? 0)).filter((v) => v > 0)
  const lo = Math.floor(Math.log10(Math.min(...values, 1)))
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(Math.max(...values, 1) * 3)))
  const y = (v: number) => top + 40 + plotHeight - ((Math.log10(v) - lo) / (hi - lo)) * plotHeight
  const out = [`<text x="${left}" y="${top + 20}" class="title">${escape(p.title)} (${p.unit}, log scale)</text>`]
  for (let e = lo; e <= hi; e++) {
    const gy = y(10 ** e)
    out.push(`<line x1="${left}" x2="${width - 20}" y1="${gy}" y2="${gy}" class="grid"/>`)
    out.push(`<text x="${left - 6}" y="${gy + 4}" text-anchor="end">${e >= 0 ? 10 ** e : (10 ** e).toFixed(-e)}</text>`)
  }
  const groupWidth = systems.length * barWidth + groupGap
  p.groups.forEach((group, g) => {
    const x0 = left + 10 + g * groupWidth
    group.bars.forEach((bar) => {
      const i = systems.indexOf(bar.system)
      const x = x0 + i * barWidth
      if (bar.value === undefined || bar.value <= 0) {
        out.push(`<text x="${x + barWidth / 2}" y="${y(10 ** lo) - 4}" text-anchor="middle" class="small">–</text>`)
        return
      }
      const by = y(Math.max(bar.value, 10 ** lo))
      out.push(
        `<rect x="${x + 1}" y="${by}" width="${barWidth - 2}" height="${y(10 ** lo) - by}" fill="${colors[i % colors.length]}">` +
          `<title>${escape(bar.system)}: ${format(bar.value)} ${p.unit}</title></rect>`
      )
      out.push(
        `<text transform="translate(${x + barWidth / 2 + 3},${by - 4}) rotate(-90)" class="small">${format(bar.value)}</text>`
      )
    })
    const lx = x0 + (systems.length * barWidth) / 2
    group.label.split("\n").forEach((line, l) => {
      out.push(`<text x="${lx}" y="${y(10 ** lo) + 16 + l * 14}" text-anchor="middle">${escape(line)}</text>`)
    })
  })
  return out.join("\n")
}

export const chart = (title: string, systems: ReadonlyArray<string>, panels: ReadonlyArray<Panel>): string => {
  const groups = Math.max(...panels.map((p) => p.groups.length), 1)
  const width = Math.max(900, left + 30 + groups * (systems.length * barWidth + groupGap))
  const legendTop = 50 + panels.length * panelHeight
  const height = legendTop + systems.length * 18 + 20
  const legend = systems.map((s, i) =>
    `<rect x="${left}" y="${legendTop + i * 18}" width="12" height="12" fill="${colors[i % colors.length]}"/>` +
    `<text x="${left + 18}" y="${legendTop + i * 18 + 10}">${escape(s)}</text>`
  )
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">`,
    "<style>text{font:12px sans-serif;fill:#222}.title{font-weight:bold;font-size:14px}" +
    ".small{font-size:10px}.grid{stroke:#ddd}</style>",
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${left}" y="22" class="title">${escape(title)}</text>`,
    ...panels.map((p, i) => panel(p, systems, 40 + i * panelHeight, width)),
    ...legend,
    "</svg>"
  ].join("\n")
}
