// Writes the runtime image's package.json: the packed service plus the framework versions this repository
// pins, installed the way any consumer installs the package (its peers are the app's own dependencies).
import { readFileSync, writeFileSync } from "node:fs"

const [source, tarball, target] = process.argv.slice(2)
const ours = JSON.parse(readFileSync(source, "utf8"))
const dependencies = { [ours.name]: `file:./${tarball}` }
for (const name of Object.keys(ours.peerDependencies)) dependencies[name] = ours.devDependencies[name]
writeFileSync(target, JSON.stringify({ name: `${ours.name}-image`, private: true, type: "module", dependencies }, null, 2))
