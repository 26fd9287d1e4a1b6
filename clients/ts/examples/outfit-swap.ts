// Outfit swap: this jacket from a shop photo, the person's pose kept, three variants.
import { RunpodClient, type JobRequest } from "@maskpaint/client";

export async function outfitSwap(client: RunpodClient, photo: string, shopPhoto: string): Promise<{ url: string; seed: number | undefined }[]> {
  const request: JobRequest = {
    image: photo,
    prompt: "a red leather jacket",
    targets: ["upper"],
    garment_image: shopPhoto,
    garment_scale: 0.7,
    control: "pose",
    control_scale: 1.0,
    num_outputs: 3,
    seed: 42,
  };
  const result = await client.run(request, { timeoutMs: 180_000 });
  return (result.images ?? []).map((img, i) => ({ url: img.url, seed: (result.seeds ?? [])[i] }));
}
