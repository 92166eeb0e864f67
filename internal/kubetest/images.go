package kubetest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// The test server images' entrypoint, in place of the official images' one.
//
//go:embed images/docker-entrypoint.sh
var serverEntrypoint []byte

// Image names. They are local names (the "localhost" registry), never
// pulled: pods use them with imagePullPolicy Never.
const (
	imageRegistry = "localhost/mysql-pitr-test/"
	// AgentImage is the mysql-pitr image: the static binary as the
	// Dockerfile builds it, on an otherwise empty image.
	AgentImage = imageRegistry + "mysql-pitr:kubetest"
	pauseImage = imageRegistry + "pause:kubetest"
)

// image is an OCI image to import into containerd: its name, its layers
// from first to last, and its configuration.
type image struct {
	name   string
	layers []layer
	config imageConfig
}

// imageConfig is the part of an OCI image configuration the tests set.
type imageConfig struct {
	User       string   `json:"User,omitempty"`
	Env        []string `json:"Env,omitempty"`
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
}

// layer writes a layer's tar stream. It must write the same bytes every
// time: the archive is written twice, once to learn each blob's digest and
// size and once to import it.
type layer func(tw *tar.Writer) error

// blob is a layer's or a document's digest and size.
type blob struct {
	digest string // sha256:…
	size   int64
}

func (b blob) path() string { return "blobs/sha256/" + strings.TrimPrefix(b.digest, "sha256:") }

// measure returns the digest and size of a layer's tar stream.
func measure(l layer) (blob, error) {
	h := sha256.New()
	c := &countingWriter{w: h}
	tw := tar.NewWriter(c)
	if err := l(tw); err != nil {
		return blob{}, err
	}
	if err := tw.Close(); err != nil {
		return blob{}, err
	}
	return blob{digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), size: c.n}, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Media types of an OCI image layout.
const (
	mtLayer    = "application/vnd.oci.image.layer.v1.tar"
	mtConfig   = "application/vnd.oci.image.config.v1+json"
	mtManifest = "application/vnd.oci.image.manifest.v1+json"
	mtIndex    = "application/vnd.oci.image.index.v1+json"
)

// descriptor is an OCI content descriptor.
type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    map[string]string `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// ociLayout is an image's OCI image layout before it is written: the
// layers' digests and sizes and the documents that describe them.
type ociLayout struct {
	img                     image
	layers                  []blob
	config, manifest, index []byte
}

// writeArchive writes img as an OCI image layout archive to w. The layers
// are measured first, then written into the archive as blobs.
func writeArchive(w io.Writer, img image) error {
	l, err := layoutOf(img)
	if err != nil {
		return err
	}
	return l.write(w)
}

// layoutOf measures img's layers and makes the configuration, manifest
// and index documents.
func layoutOf(img image) (*ociLayout, error) {
	l := &ociLayout{img: img, layers: make([]blob, len(img.layers))}
	diffIDs := make([]string, len(img.layers))
	for i, layer := range img.layers {
		b, err := measure(layer)
		if err != nil {
			return nil, fmt.Errorf("image %s, layer %d: %w", img.name, i, err)
		}
		l.layers[i], diffIDs[i] = b, b.digest
	}
	var err error
	l.config, err = json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      time.Unix(0, 0).UTC(),
		"config":       img.config,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	if err != nil {
		return nil, err
	}
	if l.manifest, err = manifestDoc(docBlob(l.config), l.layers); err != nil {
		return nil, err
	}
	if l.index, err = indexDoc(img.name, docBlob(l.manifest)); err != nil {
		return nil, err
	}
	return l, nil
}

// manifestDoc is the image manifest of a configuration and layers.
func manifestDoc(config blob, layers []blob) ([]byte, error) {
	manifestLayers := make([]descriptor, len(layers))
	for i, b := range layers {
		manifestLayers[i] = descriptor{MediaType: mtLayer, Digest: b.digest, Size: b.size}
	}
	return json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mtManifest,
		"config":        descriptor{MediaType: mtConfig, Digest: config.digest, Size: config.size},
		"layers":        manifestLayers,
	})
}

// indexDoc is the image index naming the manifest as the image name.
func indexDoc(name string, manifest blob) ([]byte, error) {
	_, tag, _ := strings.Cut(name[strings.LastIndex(name, "/")+1:], ":")
	return json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mtIndex,
		"manifests": []descriptor{{
			MediaType: mtManifest, Digest: manifest.digest, Size: manifest.size,
			Platform: map[string]string{"architecture": "amd64", "os": "linux"},
			// containerd names the image after io.containerd.image.name.
			Annotations: map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag},
		}},
	})
}

// write writes the layout as a tar archive: the layout marker, the layers,
// the configuration and manifest blobs, and the index.
func (l *ociLayout) write(w io.Writer) error {
	tw := tar.NewWriter(w)
	if err := addFile(tw, "oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	for i := range l.img.layers {
		if err := l.writeLayer(tw, i); err != nil {
			return err
		}
	}
	for _, data := range [][]byte{l.config, l.manifest} {
		if err := addFile(tw, docBlob(data).path(), data); err != nil {
			return err
		}
	}
	if err := addFile(tw, "index.json", l.index); err != nil {
		return err
	}
	return tw.Close()
}

// writeLayer writes layer i as a blob, checking that it has the digest it
// was measured with.
func (l *ociLayout) writeLayer(tw *tar.Writer, i int) error {
	b := l.layers[i]
	if err := tw.WriteHeader(&tar.Header{Name: b.path(), Mode: 0o644, Size: b.size, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	h := sha256.New()
	inner := tar.NewWriter(io.MultiWriter(tw, h))
	if err := l.img.layers[i](inner); err != nil {
		return fmt.Errorf("image %s, layer %d: %w", l.img.name, i, err)
	}
	if err := inner.Close(); err != nil {
		return err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != b.digest {
		return fmt.Errorf("image %s, layer %d changed while it was written (digest %s, then %s)", l.img.name, i, b.digest, got)
	}
	return nil
}

// addFile adds a regular file holding data to the archive.
func addFile(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

func docBlob(data []byte) blob {
	sum := sha256.Sum256(data)
	return blob{digest: "sha256:" + hex.EncodeToString(sum[:]), size: int64(len(data))}
}

// importImage streams img into containerd's k8s.io namespace, where the
// kubelet finds it, and unpacks it.
func (c *Cluster) importImage(img image) error {
	start := time.Now()
	cmd := exec.Command(c.bin.ctr, "--address", c.containerdSocket(), "--namespace", "k8s.io", "images", "import", "-")
	pr, pw := io.Pipe()
	cmd.Stdin = pr
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("ctr images import: %w", err)
	}
	werr := writeArchive(pw, img)
	pw.CloseWithError(werr)
	err := cmd.Wait()
	if werr != nil {
		return fmt.Errorf("write image %s: %w", img.name, werr)
	}
	if err != nil {
		return fmt.Errorf("ctr images import %s: %w: %s", img.name, err, strings.TrimSpace(out.String()))
	}
	c.logf("imported image %s in %s", img.name, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// file is one entry of a layer made of given files.
type file struct {
	name string // path in the image, without a leading /
	mode int64  // permissions and type bits as tar has them (0o755, 0o40755 for a directory)
	uid  int
	data []byte
	link string // a symbolic link's target
}

// filesLayer is a layer of the given files and directories, each owned by
// uid (and the same gid).
func filesLayer(files []file) layer {
	return func(tw *tar.Writer) error {
		for _, f := range files {
			h := &tar.Header{Name: f.name, Mode: f.mode & 0o7777, Uid: f.uid, Gid: f.uid, ModTime: time.Unix(0, 0)}
			switch {
			case f.link != "":
				h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.link, 0o777
			case f.mode&0o40000 != 0:
				h.Typeflag, h.Name = tar.TypeDir, strings.TrimSuffix(f.name, "/")+"/"
			default:
				h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
			}
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			if h.Typeflag == tar.TypeReg {
				if _, err := tw.Write(f.data); err != nil {
					return err
				}
			}
		}
		return nil
	}
}

// dirLayer is a layer holding the tree below root, in lexical order, with
// its owners, modes, times, symbolic and hard links. Device files and
// sockets are left out, as are the names in skip (relative to root), and
// the contents of dev, proc, sys and run.
func dirLayer(root string, skip ...string) layer {
	return func(tw *tar.Writer) error {
		links := map[[2]uint64]string{}
		return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(root, path)
			if err != nil || rel == "." {
				return err
			}
			for _, s := range skip {
				if rel == s {
					if d.IsDir() {
						return filepath.SkipDir
					}
					return nil
				}
			}
			if dir := filepath.Dir(rel); dir == "dev" || dir == "proc" || dir == "sys" || dir == "run" {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			st := fi.Sys().(*syscall.Stat_t)
			link := ""
			if fi.Mode()&fs.ModeSymlink != 0 {
				if link, err = os.Readlink(path); err != nil {
					return err
				}
			} else if !fi.Mode().IsRegular() && !fi.IsDir() {
				return nil
			}
			h, err := tar.FileInfoHeader(fi, link)
			if err != nil {
				return err
			}
			h.Name = filepath.ToSlash(rel)
			if fi.IsDir() {
				h.Name += "/"
			}
			h.Uid, h.Gid, h.Uname, h.Gname = int(st.Uid), int(st.Gid), "", ""
			h.AccessTime, h.ChangeTime, h.Format = time.Time{}, time.Time{}, tar.FormatPAX
			h.ModTime = h.ModTime.Truncate(time.Second)
			if fi.Mode().IsRegular() && st.Nlink > 1 {
				key := [2]uint64{st.Dev, st.Ino}
				if first, ok := links[key]; ok {
					h.Typeflag, h.Linkname, h.Size = tar.TypeLink, first, 0
					return tw.WriteHeader(h)
				}
				links[key] = h.Name
			}
			if err := tw.WriteHeader(h); err != nil {
				return err
			}
			if !fi.Mode().IsRegular() {
				return nil
			}
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			n, err := io.Copy(tw, f)
			if err == nil && n != h.Size {
				err = fmt.Errorf("%s changed size while it was read", path)
			}
			return err
		})
	}
}

// mysqlUser rewrites an /etc/passwd or /etc/group so that the mysql user
// and group have id uid, as in the official images (999), adding them when
// the packages made none; other lines stay.
func mysqlUser(text string, uid int, passwd bool) []byte {
	var out []string
	found := false
	for line := range strings.Lines(text) {
		line = strings.TrimSuffix(line, "\n")
		f := strings.Split(line, ":")
		if len(f) >= 3 && f[0] == "mysql" {
			found = true
			f[2] = fmt.Sprint(uid)
			if len(f) == 7 { // passwd: name:x:uid:gid:gecos:home:shell
				f[3] = fmt.Sprint(uid)
			}
			line = strings.Join(f, ":")
		}
		out = append(out, line)
	}
	if !found && passwd {
		out = append(out, fmt.Sprintf("mysql:x:%d:%d:MySQL Server:/nonexistent:/bin/false", uid, uid))
	} else if !found {
		out = append(out, fmt.Sprintf("mysql:x:%d:", uid))
	}
	return []byte(strings.Join(out, "\n") + "\n")
}

// serverImage is a test server image: the server root (scripts/server-roots.sh)
// and a layer with the entrypoint, the mysql user as uid 999, and the
// directories the official images have.
func serverImage(name, root, server string) (image, error) {
	const uid = 999
	var files []file
	for _, p := range []string{"etc/passwd", "etc/group"} {
		b, err := os.ReadFile(filepath.Join(root, p))
		if err != nil {
			return image{}, err
		}
		files = append(files, file{name: p, mode: 0o644, data: mysqlUser(string(b), uid, p == "etc/passwd")})
	}
	files = append(files,
		file{name: "usr/local/bin/docker-entrypoint.sh", mode: 0o755, data: serverEntrypoint},
		file{name: "docker-entrypoint-initdb.d", mode: 0o40755},
		file{name: "var/lib/mysql", mode: 0o40750, uid: uid},
		file{name: "var/lib/mysql-files", mode: 0o40750, uid: uid},
		file{name: "run/mysqld", mode: 0o40755, uid: uid},
	)
	if _, err := os.Stat(filepath.Join(root, "usr/sbin", server)); err != nil {
		return image{}, fmt.Errorf("server root %s: %w", root, err)
	}
	return image{
		name: name,
		// The wrappers that run the root's programs on the host are not
		// part of the image.
		layers: []layer{dirLayer(root, ".bin", ".basedir"), filesLayer(files)},
		config: imageConfig{
			Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Entrypoint: []string{"docker-entrypoint.sh"},
			Cmd:        []string{server},
		},
	}, nil
}

// staticImage is an image of one static program at /name, run as uid, with
// /etc/passwd naming root and that user, the host's CA bundle and /tmp:
// what a distroless static image holds.
func staticImage(name, program string, uid int, user string) (image, error) {
	bin, err := os.ReadFile(program)
	if err != nil {
		return image{}, err
	}
	files := []file{
		{name: "etc", mode: 0o40755},
		{name: "etc/passwd", mode: 0o644, data: fmt.Appendf(nil, "root:x:0:0:root:/root:/sbin/nologin\n%s:x:%d:%d:%s:/home/%s:/sbin/nologin\n", user, uid, uid, user, user)},
		{name: "etc/group", mode: 0o644, data: fmt.Appendf(nil, "root:x:0:\n%s:x:%d:\n", user, uid)},
		{name: "tmp", mode: 0o41777},
		{name: filepath.Base(program), mode: 0o755, data: bin},
	}
	if ca, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt"); err == nil {
		files = append(files, file{name: "etc/ssl", mode: 0o40755}, file{name: "etc/ssl/certs", mode: 0o40755},
			file{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: ca})
	}
	sort.SliceStable(files, func(i, j int) bool { return files[i].name < files[j].name })
	return image{
		name:   name,
		layers: []layer{filesLayer(files)},
		config: imageConfig{User: fmt.Sprintf("%d:%d", uid, uid), Entrypoint: []string{"/" + filepath.Base(program)}},
	}, nil
}

// Binary returns the static mysql-pitr binary, built as the Dockerfile
// builds it, that the mysql-pitr image holds.
func (c *Cluster) Binary() string { return c.binary }

// Plugin returns the kubectl plugin, kubectl-mysql_pitr, that runs
// kubectl mysql-pitr restore on the host.
func (c *Cluster) Plugin() string { return c.plugin }

// AgentImage imports the mysql-pitr image on first use and returns its
// name.
func (c *Cluster) AgentImage(tb testing.TB) string {
	tb.Helper()
	return c.ensureImage(tb, AgentImage, func() (image, error) {
		// distroless/static's nonroot user, as in the Dockerfile.
		return staticImage(AgentImage, c.binary, 65532, "nonroot")
	})
}

// ServerImage imports the flavor's test server image on first use and
// returns its name: localhost/mysql-pitr-test/mysql:9.7,
// …/mariadb:11.8 or …/mariadb:10.11, made from the flavor's server root
// (scripts/server-roots.sh).
func (c *Cluster) ServerImage(tb testing.TB, f testbed.Flavor) string {
	tb.Helper()
	repo, tag, _ := strings.Cut(f.String(), "-")
	name := imageRegistry + repo + ":" + tag
	return c.ensureImage(tb, name, func() (image, error) {
		root := filepath.Join(testbed.RootsDir(), f.String())
		if _, err := os.Stat(root); err != nil {
			return image{}, fmt.Errorf("server root %s: %w (scripts/server-roots.sh builds it)", root, err)
		}
		return serverImage(name, root, f.ServerProgram())
	})
}

// ensureImage imports an image once per cluster.
func (c *Cluster) ensureImage(tb testing.TB, name string, make func() (image, error)) string {
	tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	err, done := c.images[name]
	if !done {
		var img image
		if img, err = make(); err == nil {
			err = c.importImage(img)
		}
		c.images[name] = err
	}
	if err != nil {
		tb.Fatalf("image %s: %v", name, err)
	}
	return name
}
